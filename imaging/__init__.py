"""Pure image functions on numpy arrays (RGB float32 in [0, 1], channels last), shared by the node
packs and by training: they know nothing of nodes, inputs or errors for people."""
