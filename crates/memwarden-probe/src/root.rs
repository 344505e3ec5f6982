//! The host root: every read of /proc, /sys and /run goes through it, so a test can point the
//! whole probe at a fake machine laid out as a directory tree.

use std::fs::File;
use std::io::{self, Read};
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

    /// Reads a whole (small) file of the machine into a string.
    pub fn read_to_string(&self, rel: &str) -> io::Result<String> {
        std::fs::read_to_string(self.path(rel))
    }
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
    /// (and stays grown) only for a file larger than it.
    pub fn read(&mut self, path: &Path) -> io::Result<&[u8]> {
        let mut file = File::open(path)?;
        let mut len = 0;
        loop {
            if len == self.data.len() {
                self.data.resize(self.data.len() * 2, 0);
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
