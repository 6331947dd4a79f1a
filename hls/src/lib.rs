//! LL-HLS from CMAF parts: media playlists with parts, preload hints and blocking reload, a
//! sliding live window and an event playlist that becomes VOD, master playlists with measured
//! bandwidth; the objects to store (media before the playlists that name it); signed URLs.
#![deny(unsafe_code)]

mod object;
mod origin;
mod packager;
mod playlist;
mod sign;
mod storage;
mod uploader;

pub use object::{cache_control, content_type, Object};
pub use origin::{LiveIndex, LiveListener, Origin, Response};
pub use packager::{Packager, PackagerConfig, Position, RenditionInfo, ResumeError};
pub use playlist::{
    open_tail, render_master, segments_from, MediaState, OpenTail, PartEntry, SegmentEntry,
    VariantEntry, View,
};
pub use sign::{now_unix, split_signed_path, SignError, SigningKeys};
pub use storage::{check_key, FsStore, S3Config, S3Store, StorageError, Store};
pub use uploader::{UploadStats, Uploader};
