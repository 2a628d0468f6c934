//! Keys: the file system key (servers and administrators) and client keys derived
//! from it, with where a process finds its key.
//!
//! A key file is text, mode 0600:
//!
//! ```text
//! # nacre key: whoever holds it is ...
//! fsname demo
//! kind client
//! name alice
//! map 1000:1000
//! secret 64 hex digits
//! ```
//!
//! A client key's secret is an HMAC of the file system key over the file system name,
//! the client's name and its identity map, so a server (which holds the file system key)
//! derives it from what the client says it is: no list of issued keys to keep, and a
//! holder who edits the name or the map of its file no longer proves anything.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::mac::{mac, random_bytes};
use crate::AuthError;

/// The length of a secret and of every proof.
pub const SECRET_LEN: usize = 32;

/// A uid and gid that every user of a client key is taken for (Lustre's nodemap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdMap {
    pub uid: u32,
    pub gid: u32,
}

impl fmt::Display for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

impl std::str::FromStr for IdMap {
    type Err = String;

    fn from_str(s: &str) -> Result<IdMap, String> {
        let (u, g) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}`: expected UID:GID"))?;
        let num = |v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|e| format!("`{s}`: {v}: {e}"))
        };
        Ok(IdMap {
            uid: num(u)?,
            gid: num(g)?,
        })
    }
}

/// Who a key says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// The file system key: servers, and administrators' tools.
    FileSystem,
    /// A client key, by name, with the identity its users are all taken for, if any.
    Client { name: String, map: Option<IdMap> },
}

/// Longest client name.
pub const MAX_NAME_LEN: usize = 64;

impl Principal {
    /// The bytes proofs cover and the wire carries: kind, name, map.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Principal::FileSystem => vec![1],
            Principal::Client { name, map } => {
                let mut out = vec![2, name.len() as u8];
                out.extend_from_slice(name.as_bytes());
                match map {
                    None => out.push(0),
                    Some(m) => {
                        out.push(1);
                        out.extend_from_slice(&m.uid.to_le_bytes());
                        out.extend_from_slice(&m.gid.to_le_bytes());
                    }
                }
                out
            }
        }
    }

    /// Decodes [`Principal::encode`]'s bytes at the front of `b`; returns the rest.
    pub fn decode(b: &[u8]) -> Result<(Principal, &[u8]), AuthError> {
        let bad = |what: &str| AuthError::Malformed(format!("principal: {what}"));
        match b.first() {
            Some(1) => Ok((Principal::FileSystem, &b[1..])),
            Some(2) => {
                let len = *b.get(1).ok_or_else(|| bad("no name length"))? as usize;
                let name = b.get(2..2 + len).ok_or_else(|| bad("short name"))?;
                let name = std::str::from_utf8(name).map_err(|_| bad("name not UTF-8"))?;
                check_name(name)?;
                let rest = &b[2 + len..];
                let (map, rest) = match rest.first() {
                    Some(0) => (None, &rest[1..]),
                    Some(1) if rest.len() >= 9 => {
                        let word =
                            |at: usize| u32::from_le_bytes(rest[at..at + 4].try_into().unwrap());
                        let map = IdMap {
                            uid: word(1),
                            gid: word(5),
                        };
                        (Some(map), &rest[9..])
                    }
                    _ => return Err(bad("bad map")),
                };
                let p = Principal::Client {
                    name: name.to_string(),
                    map,
                };
                Ok((p, rest))
            }
            _ => Err(bad("unknown kind")),
        }
    }

    /// Whether the holder may act as a server (claim roles, skip capabilities).
    pub fn is_server(&self) -> bool {
        matches!(self, Principal::FileSystem)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::FileSystem => f.write_str("the file system key"),
            Principal::Client { name, map: None } => write!(f, "client key `{name}`"),
            Principal::Client { name, map: Some(m) } => {
                write!(f, "client key `{name}` (users mapped to {m})")
            }
        }
    }
}

fn check_name(name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.@".contains(&c));
    match ok {
        true => Ok(()),
        false => Err(AuthError::Malformed(format!(
            "client name `{name}`: 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 - _ . @"
        ))),
    }
}

/// A key as loaded: the file system it opens, who it says its holder is, its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    fsname: String,
    principal: Principal,
    secret: [u8; SECRET_LEN],
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret: keys end up in logged configurations.
        write!(f, "Key({}, {})", self.fsname, self.principal)
    }
}

impl Key {
    /// A new random file system key.
    pub fn generate(fsname: &str) -> Result<Key, AuthError> {
        Ok(Key {
            fsname: fsname.to_string(),
            principal: Principal::FileSystem,
            secret: random_bytes()?,
        })
    }

    pub fn fsname(&self) -> &str {
        &self.fsname
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub(crate) fn secret(&self) -> &[u8; SECRET_LEN] {
        &self.secret
    }

    /// A client key issued under this file system key.
    pub fn issue_client(&self, name: &str, map: Option<IdMap>) -> Result<Key, AuthError> {
        check_name(name)?;
        let principal = Principal::Client {
            name: name.to_string(),
            map,
        };
        let secret = self
            .secret_of(&principal)
            .ok_or(AuthError::NotFileSystemKey)?;
        Ok(Key {
            fsname: self.fsname.clone(),
            principal,
            secret,
        })
    }

    /// The secret a holder of `principal` proves it knows, derived from this file
    /// system key (None: this is not a file system key, so it cannot derive any).
    pub fn secret_of(&self, principal: &Principal) -> Option<[u8; SECRET_LEN]> {
        if !self.principal.is_server() {
            return None;
        }
        Some(match principal {
            Principal::FileSystem => self.secret,
            Principal::Client { .. } => mac(
                &self.secret,
                &[
                    b"nacre client key",
                    self.fsname.as_bytes(),
                    &principal.encode(),
                ],
            ),
        })
    }

    /// A key derived for one purpose (capabilities), so that no proof made for one
    /// use is valid for another.
    pub fn derive(&self, purpose: &str) -> [u8; SECRET_LEN] {
        mac(&self.secret, &[b"nacre derived key", purpose.as_bytes()])
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        match &self.principal {
            Principal::FileSystem => {
                t.push_str("# nacre file system key: whoever holds it can serve, claim server\n");
                t.push_str("# roles, issue client keys and act as any user. Keep it mode 0600.\n");
                t.push_str(&format!("fsname {}\nkind filesystem\n", self.fsname));
            }
            Principal::Client { name, map } => {
                t.push_str("# nacre client key: whoever holds it can use the file system");
                t.push_str(if map.is_some() {
                    "\n# as the mapped user only. Keep it mode 0600.\n"
                } else {
                    "\n# as any user but root (squashed if the file system says so).\n"
                });
                t.push_str(&format!(
                    "fsname {}\nkind client\nname {name}\n",
                    self.fsname
                ));
                if let Some(m) = map {
                    t.push_str(&format!("map {m}\n"));
                }
            }
        }
        t.push_str(&format!("secret {}\n", hex(&self.secret)));
        t
    }

    /// Parses a key file's text.
    pub fn from_text(text: &str) -> Result<Key, AuthError> {
        let mut fields = std::collections::HashMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            fields.insert(k, v.trim());
        }
        let get = |k: &str| {
            fields
                .get(k)
                .copied()
                .ok_or_else(|| AuthError::Malformed(format!("key file has no `{k}` line")))
        };
        let fsname = get("fsname")?.to_string();
        let secret = unhex(get("secret")?)?;
        let principal = match get("kind")? {
            "filesystem" => Principal::FileSystem,
            "client" => {
                let name = get("name")?.to_string();
                check_name(&name)?;
                let map = match fields.get("map") {
                    None => None,
                    Some(m) => Some(m.parse().map_err(AuthError::Malformed)?),
                };
                Principal::Client { name, map }
            }
            other => return Err(AuthError::Malformed(format!("unknown key kind `{other}`"))),
        };
        Ok(Key {
            fsname,
            principal,
            secret,
        })
    }

    /// Writes the key to a new file, mode 0600 (an existing file is not replaced).
    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        let io = |e| AuthError::Io(path.to_path_buf(), e);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(self.to_text().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Reads a key file, refusing one that others than its owner may read (as ssh does
    /// a private key): a key anyone on the host can read protects nothing.
    pub fn load(path: &Path) -> Result<Key, AuthError> {
        let io = |e| AuthError::Io(path.to_path_buf(), e);
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(AuthError::Exposed(path.to_path_buf(), mode & 0o777));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Key::from_text(&text).map_err(|e| AuthError::Malformed(format!("{}: {e}", path.display())))
    }
}

/// Where a process looks for its key: `--key FILE`, else `NACRE_KEY`, else
/// `/etc/nacre/FSNAME.key` (the file system's name is learned from the MGS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySource {
    /// The key file given on the command line or in a configuration.
    pub file: Option<PathBuf>,
    /// A key already loaded (a server hands its own to the clients it runs).
    pub key: Option<Key>,
}

/// The environment variable naming a key file.
pub const KEY_ENV: &str = "NACRE_KEY";
/// The directory of keys installed on a host.
pub const KEY_DIR: &str = "/etc/nacre";

impl KeySource {
    /// From `--key FILE` if given, else `NACRE_KEY` if set, else the installed key.
    pub fn new(file: Option<PathBuf>) -> KeySource {
        let file = file.or_else(|| {
            std::env::var_os(KEY_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        KeySource { file, key: None }
    }

    /// A key already in hand.
    pub fn key(key: Key) -> KeySource {
        KeySource {
            file: None,
            key: Some(key),
        }
    }

    /// The key for file system `fsname`.
    pub fn load(&self, fsname: &str) -> Result<Key, AuthError> {
        let (key, from) = match (&self.key, &self.file) {
            (Some(k), _) => (k.clone(), "the key given".to_string()),
            (None, Some(f)) => (Key::load(f)?, f.display().to_string()),
            (None, None) => {
                let installed = Path::new(KEY_DIR).join(format!("{fsname}.key"));
                match Key::load(&installed) {
                    Ok(k) => (k, installed.display().to_string()),
                    Err(AuthError::Io(_, e)) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(AuthError::NoKey(fsname.to_string()));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if key.fsname != fsname {
            return Err(AuthError::WrongFileSystem {
                from,
                has: key.fsname,
                want: fsname.to_string(),
            });
        }
        Ok(key)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<[u8; SECRET_LEN], AuthError> {
    let bad = || AuthError::Malformed(format!("secret: expected {} hex digits", SECRET_LEN * 2));
    if s.len() != SECRET_LEN * 2 {
        return Err(bad());
    }
    let mut out = [0u8; SECRET_LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_round_trips_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Key::generate("demo").unwrap();
        let alice = fs
            .issue_client(
                "alice",
                Some(IdMap {
                    uid: 1000,
                    gid: 100,
                }),
            )
            .unwrap();
        for (k, name) in [(&fs, "fs.key"), (&alice, "alice.key")] {
            let p = dir.path().join(name);
            k.save(&p).unwrap();
            assert_eq!(&Key::load(&p).unwrap(), k);
            assert!(
                matches!(k.save(&p), Err(AuthError::Io(..))),
                "never replaced"
            );
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(Key::load(&p), Err(AuthError::Exposed(_, 0o644))));
        }
        assert!(
            !format!("{fs:?}").contains(&hex(fs.secret())),
            "Debug hides it"
        );
    }

    #[test]
    fn a_client_secret_is_derived_from_what_the_client_says_it_is() {
        let fs = Key::generate("demo").unwrap();
        let alice = fs.issue_client("alice", None).unwrap();
        assert_eq!(fs.secret_of(alice.principal()), Some(alice.secret));
        let other = Principal::Client {
            name: "alice".into(),
            map: Some(IdMap { uid: 0, gid: 0 }),
        };
        assert_ne!(fs.secret_of(&other), Some(alice.secret), "the map is bound");
        assert_eq!(
            alice.secret_of(&other),
            None,
            "a client key derives nothing"
        );
        assert!(alice.issue_client("mallory", None).is_err());
        let bytes = other.encode();
        let (p, rest) = Principal::decode(&bytes).unwrap();
        assert_eq!((p, rest), (other, &[][..]));
        assert!(fs.issue_client("no spaces", None).is_err());
    }

    #[test]
    fn a_key_for_another_file_system_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        Key::generate("one").unwrap().save(&p).unwrap();
        let src = KeySource {
            file: Some(p),
            key: None,
        };
        assert!(src.load("one").is_ok());
        let e = src.load("two").unwrap_err().to_string();
        assert!(e.contains("`one`") && e.contains("`two`"), "{e}");
    }
}
