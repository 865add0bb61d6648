"""The studio's server side: the job queue, its history on disk and the HTTP API."""
