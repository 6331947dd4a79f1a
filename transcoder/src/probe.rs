//! Offline probe encodes for `aula ladder tune` and the ladder benchmark. (filled below)
