//! Scaling in a real pipeline: a source of another shape than the rungs is letterboxed
//! (pillarboxed) into the rung's size; a 16:9 source fills even a rung rounded off 16:9.

mod common;

use common::{run, test_spec, Faults, RtpSource};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use transcoder::{RenditionId, Transcoder, VideoCodec};

/// The luma of the first decoded frame of an MP4 file: (width, height, Y plane).
fn first_frame_luma(file: &[u8]) -> (usize, usize, Vec<u8>) {
    let path = std::env::temp_dir().join(format!(
        "aula-scaling-{}-{}.mp4",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::write(&path, file).expect("write temp");
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! videoconvert \
         ! video/x-raw,format=I420 ! appsink name=out sync=false",
        path.display()
    ))
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .expect("pipeline");
    let sink = p
        .by_name("out")
        .expect("appsink")
        .downcast::<gst_app::AppSink>()
        .expect("appsink");
    p.set_state(gst::State::Playing).expect("play");
    // A frame some way in (the first may still be the source's start-up).
    let mut sample = None;
    for _ in 0..20 {
        sample = sink.try_pull_sample(gst::ClockTime::from_seconds(10));
    }
    let sample = sample.expect("a decoded frame");
    let info = gst_video::VideoInfo::from_caps(sample.caps().expect("caps")).expect("info");
    let buf = sample
        .buffer()
        .expect("buffer")
        .map_readable()
        .expect("map");
    let (w, h, stride) = (
        info.width() as usize,
        info.height() as usize,
        info.stride()[0] as usize,
    );
    let mut y = Vec::with_capacity(w * h);
    for row in 0..h {
        y.extend_from_slice(&buf[row * stride..row * stride + w]);
    }
    let _ = p.set_state(gst::State::Null);
    let _ = std::fs::remove_file(&path);
    (w, h, y)
}

/// Mean luma of columns `cols` over the middle rows.
fn column_mean(w: usize, h: usize, y: &[u8], cols: std::ops::Range<usize>) -> f64 {
    let (mut sum, mut n) = (0u64, 0u64);
    for row in h / 4..3 * h / 4 {
        for c in cols.clone() {
            sum += u64::from(y[row * w + c]);
            n += 1;
        }
    }
    sum as f64 / n.max(1) as f64
}

fn transcode_white(width: u32, height: u32) -> Vec<(usize, usize, Vec<u8>)> {
    let src = RtpSource::start_pattern(VideoCodec::H264, width, height, "white").expect("source");
    let spec = test_spec(VideoCodec::H264);
    let rungs = spec.ladder.rungs.len();
    let (tc, rx) = Transcoder::start(spec).expect("start");
    let (out, _) = run(tc, rx, &src, 6, Faults::default());
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    (0..rungs)
        .map(|i| first_frame_luma(&out.file(RenditionId::Video(i))))
        .collect()
}

#[test]
fn a_4_3_source_is_pillarboxed_and_a_16_9_source_fills_every_rung() {
    for (i, (w, h, y)) in transcode_white(640, 480).iter().enumerate() {
        let (edge, middle) = (
            column_mean(*w, *h, y, 0..w / 16),
            column_mean(*w, *h, y, w / 2 - 4..w / 2 + 4),
        );
        assert!(
            edge < 40.0 && middle > 200.0,
            "rung {i} ({w}x{h}) of a 4:3 white source: black bars at the sides, white in the middle (edge {edge:.0}, middle {middle:.0})"
        );
    }
    for (i, (w, h, y)) in transcode_white(640, 360).iter().enumerate() {
        let edge = column_mean(*w, *h, y, 0..2).min(column_mean(*w, *h, y, w - 2..*w));
        let (top, bottom) = (
            y[..*w].iter().map(|&v| u64::from(v)).sum::<u64>() / *w as u64,
            y[(h - 1) * w..].iter().map(|&v| u64::from(v)).sum::<u64>() / *w as u64,
        );
        assert!(
            edge > 200.0 && top > 200 && bottom > 200,
            "rung {i} ({w}x{h}) of a 16:9 white source: white to every edge (sides {edge:.0}, top {top}, bottom {bottom})"
        );
    }
}
