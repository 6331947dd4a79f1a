//! LL-HLS packaging, storage backends and URL signing. Filled by issue 4; empty until then.
