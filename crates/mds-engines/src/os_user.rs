//! The unprivileged account engines run as when mds itself runs as root
//! (PostgreSQL refuses to run as root, and should).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{chown, Gid, Uid, User};

use crate::EngineError;

#[derive(Debug, Clone)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl OsUser {
    /// `None` when mds is not root: engines then run as mds's own user.
    /// As root: the named account, else `postgres` (Debian's packages create
    /// it), else `nobody`.
    pub fn for_engines(preferred: Option<&str>) -> Result<Option<Self>, EngineError> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        let candidates: Vec<&str> = match preferred {
            Some(name) => vec![name],
            None => vec!["postgres", "nobody"],
        };
        for name in &candidates {
            if let Ok(Some(user)) = User::from_name(name) {
                if user.uid.is_root() {
                    return Err(EngineError::Other(format!(
                        "engine OS user {name:?} is root; engines must run unprivileged"
                    )));
                }
                return Ok(Some(Self {
                    name: user.name,
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                }));
            }
        }
        Err(EngineError::Other(format!(
            "none of the OS users {candidates:?} exists to run engines as; create one \
             (useradd --system postgres) or pass --engine-os-user"
        )))
    }

    pub fn chown(&self, path: &Path) -> Result<(), EngineError> {
        chown(
            path,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
        )
        .map_err(|e| EngineError::Io {
            context: format!("chown {} to {}", path.display(), self.name),
            source: e.into(),
        })
    }

    /// Fails with a clear message when this user cannot walk down to `dir`.
    pub fn check_can_enter(&self, dir: &Path) -> Result<(), EngineError> {
        for ancestor in dir.ancestors() {
            let Ok(meta) = std::fs::metadata(ancestor) else {
                continue;
            };
            let mode = meta.mode();
            let ok = if meta.uid() == self.uid {
                mode & 0o100 != 0
            } else if meta.gid() == self.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !ok {
                return Err(EngineError::Inaccessible {
                    user: self.name.clone(),
                    path: ancestor.display().to_string(),
                });
            }
        }
        Ok(())
    }
}
