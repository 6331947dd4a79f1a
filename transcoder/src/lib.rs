//! GStreamer transcoding pipelines (RTP in, CMAF renditions out). Filled by issue 3; empty until then.
