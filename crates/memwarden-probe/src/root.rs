//! The host root: every read of /proc, /sys and /run goes through it, so a test can point the
//! whole probe at a fake machine laid out as a directory tree.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::ProbeError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
}

impl HostRoot {
    /// A root that must exist and be a directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<HostRoot, ProbeError> {
        let root = root.into();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(HostRoot { root }),
            Ok(_) => Err(ProbeError::BadRoot {
                root,
                why: "not a directory".into(),
            }),
            Err(e) => Err(ProbeError::BadRoot {
                root,
                why: e.to_string(),
            }),
        }
    }

    /// The real machine.
    pub fn system() -> HostRoot {
        HostRoot { root: "/".into() }
    }

    pub fn is_system(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// `rel` (an absolute machine path such as `/proc/meminfo`) under this root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Reads a whole (small) file of the machine into a string, bounded by [`MAX_FILE_BYTES`].
    pub fn read_to_string(&self, rel: &str) -> io::Result<String> {
        read_to_string_bounded(&self.path(rel), MAX_FILE_BYTES)
    }
}

/// The most bytes read from one file of /proc, /sys or a runtime's state. The largest honest
/// one is a big process's `maps` (a few MiB); anything past this is not a kernel file.
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// The bound for a sysfs attribute or a cgroup file: the kernel hands out at most a page or two.
pub const SMALL_FILE_BYTES: usize = 64 << 10;

/// Opens `path` for reading only if it is a regular file (what /proc, sysfs and every state
/// file are). It is opened non-blocking, so a FIFO planted where a file should be cannot hang the
/// open, and refused after an `fstat` of what was really opened, so a link to `/dev/zero` or a
/// socket is never read.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}, not a regular file"),
    ))
}

/// Reads at most `max` bytes of a regular file; a longer one is an error, not a truncation that
/// a parser would take for the whole.
pub fn read_bounded(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut out = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut out)?;
    if out.len() > max {
        return Err(too_large(max));
    }
    Ok(out)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_to_string_bounded(path: &Path, max: usize) -> io::Result<String> {
    String::from_utf8(read_bounded(path, max)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn too_large(max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than {max} bytes"),
    )
}

/// A reusable read buffer: one allocation serves every file of a snapshot.
#[derive(Debug)]
pub struct ReadBuf {
    data: Vec<u8>,
}

impl Default for ReadBuf {
    fn default() -> Self {
        ReadBuf {
            data: vec![0; 16 * 1024],
        }
    }
}

impl ReadBuf {
    /// Reads a whole file and returns its bytes. Kernel pseudo-files hand out their content in
    /// one `read` when the buffer is big enough, and a read that does not fill the buffer means
    /// end of file, so a typical file costs one open, one read and one close. The buffer grows
    /// (and stays grown) only for a file larger than it, up to [`MAX_FILE_BYTES`].
    pub fn read(&mut self, path: &Path) -> io::Result<&[u8]> {
        let mut file = open_regular(path)?;
        let mut len = 0;
        loop {
            if len == self.data.len() {
                if len >= MAX_FILE_BYTES {
                    return Err(too_large(MAX_FILE_BYTES));
                }
                self.data
                    .resize((self.data.len() * 2).min(MAX_FILE_BYTES), 0);
            }
            match file.read(&mut self.data[len..]) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if len < self.data.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(&self.data[..len])
    }
}
