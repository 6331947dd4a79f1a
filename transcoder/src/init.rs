//! GStreamer start-up: initialise once, register `cmafmux` statically, check the elements.

use std::sync::OnceLock;

use gstreamer as gst;

use crate::error::TranscodeError;

/// Elements the transcoder and probe encoder use, with the Debian package that ships each.
const NEEDED: &[(&str, &str)] = &[
    ("appsrc", "gstreamer1.0-plugins-base"),
    ("appsink", "gstreamer1.0-plugins-base"),
    ("rtpjitterbuffer", "gstreamer1.0-plugins-good"),
    ("rtpvp8depay", "gstreamer1.0-plugins-good"),
    ("rtph264depay", "gstreamer1.0-plugins-good"),
    ("rtpopusdepay", "gstreamer1.0-plugins-good"),
    ("vp8dec", "gstreamer1.0-plugins-good"),
    ("avdec_h264", "gstreamer1.0-libav"),
    ("h264parse", "gstreamer1.0-plugins-bad"),
    ("opusdec", "gstreamer1.0-plugins-base"),
    ("x264enc", "gstreamer1.0-plugins-ugly"),
    ("avenc_aac", "gstreamer1.0-libav"),
    ("videoscale", "gstreamer1.0-plugins-base"),
    ("videoconvert", "gstreamer1.0-plugins-base"),
    ("audioresample", "gstreamer1.0-plugins-base"),
    ("audiorate", "gstreamer1.0-plugins-base"),
    ("videorate", "gstreamer1.0-plugins-base"),
    ("capssetter", "gstreamer1.0-plugins-good"),
    ("decodebin", "gstreamer1.0-plugins-base"),
    ("mp4mux", "gstreamer1.0-plugins-good"),
];

/// Initialises GStreamer and registers the statically linked `cmafmux`; cheap after the first call.
pub fn init() -> Result<(), TranscodeError> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        gst::init().map_err(|e| e.to_string())?;
        gstfmp4::plugin_register_static().map_err(|e| format!("registering cmafmux: {e}"))?;
        Ok(())
    });
    r.clone().map_err(TranscodeError::Init)?;
    for &(element, package) in NEEDED {
        if gst::ElementFactory::find(element).is_none() {
            return Err(TranscodeError::MissingElement { element, package });
        }
    }
    Ok(())
}
