use hls::TrackInfo;
use ladders::Ladder;
use transcoder::RenditionId;

/// The track name a rendition is stored under: `v0`, `v1`, ... and `audio`.
pub fn track_name(r: RenditionId) -> String {
    r.to_string()
}

/// The packager's tracks for a ladder: a video track per rung, then the audio.
pub fn track_infos(l: &Ladder) -> Vec<TrackInfo> {
    let mut t: Vec<TrackInfo> = l
        .rungs
        .iter()
        .enumerate()
        .map(|(i, r)| TrackInfo {
            name: track_name(RenditionId::Video(i)),
            codecs: r.codecs(),
            resolution: Some((r.width, r.height)),
            frame_rate: Some(r.fps as f64),
            is_audio: false,
        })
        .collect();
    t.push(TrackInfo {
        name: track_name(RenditionId::Audio),
        codecs: l.audio.codecs().into(),
        resolution: None,
        frame_rate: None,
        is_audio: true,
    });
    t
}
