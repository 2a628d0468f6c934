//! POSIX error numbers as the object store reports them (they travel to clients as is).

/// A POSIX errno value (positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EFBIG: Errno = Errno(libc::EFBIG);
    pub const EROFS: Errno = Errno(libc::EROFS);
    pub const ESTALE: Errno = Errno(libc::ESTALE);

    pub fn from_io(e: &std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }

    /// Errors that say the device or file system under the target is failing, as
    /// opposed to errors of one request (ENOSPC, EFBIG, ENOENT...).
    pub fn is_device_failure(self) -> bool {
        self == Errno::EIO || self == Errno::EROFS || self.0 == libc::EUCLEAN
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (errno {})",
            std::io::Error::from_raw_os_error(self.0),
            self.0
        )
    }
}

impl std::error::Error for Errno {}
