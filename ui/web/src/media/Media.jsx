// One output shown on the page: a picture in an <img> (animated WebP, GIF and APNG play there),
// a video in a looping, muted, autoplaying <video> with controls. Other props go to the element.
import { isVideo } from "./media.js";

export default function MediaItem({ src, alt = "", controls = true, onError, onLoad, ...rest }) {
  if (isVideo(src)) {
    return (
      <video
        src={src}
        controls={controls}
        loop
        muted
        autoPlay
        playsInline
        aria-label={alt || "video"}
        onError={onError}
        onLoadedMetadata={onLoad}
        {...rest}
      />
    );
  }
  return <img src={src} alt={alt} onError={onError} onLoad={onLoad} {...rest} />;
}
