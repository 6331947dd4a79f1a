//! A ladder's renditions as the packager names and describes them.

use hls::RenditionInfo;
use ladders::Ladder;
use transcoder::RenditionId;

/// The name a rendition is stored and listed under: `v0`, `v1`, ... and `audio`.
pub fn rendition_name(r: RenditionId) -> String {
    r.to_string()
}

/// The packager's renditions for a ladder: one per rung, then the audio.
pub fn rendition_infos(l: &Ladder) -> Vec<RenditionInfo> {
    let mut t: Vec<RenditionInfo> = l
        .rungs
        .iter()
        .enumerate()
        .map(|(i, r)| RenditionInfo {
            name: rendition_name(RenditionId::Video(i)),
            codecs: r.codecs(),
            resolution: Some((r.width, r.height)),
            frame_rate: Some(r.fps as f64),
            is_audio: false,
        })
        .collect();
    t.push(RenditionInfo {
        name: rendition_name(RenditionId::Audio),
        codecs: l.audio.codecs().into(),
        resolution: None,
        frame_rate: None,
        is_audio: true,
    });
    t
}
