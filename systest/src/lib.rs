//! nacre-systest: the tests that drive real servers with the real client library.
//!
//! The servers (nacre-mds, nacre-oss) must not depend on the file client, not even for
//! their tests; the tests that need both sides live here, in `tests/`. They start the
//! server binaries that `cargo build --workspace --bins` built beside them (scripts/test
//! builds them first). This library is empty on purpose.
