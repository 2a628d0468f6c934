//! POSIX metadata as FSx for Lustre keeps it in S3 object user metadata.

use object_store::{Attribute, AttributeValue, Attributes};

/// A file's mode, owner and mtime, each when known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PosixMeta {
    /// Full st_mode (type bits included, as FSx writes it).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime_ns: Option<i64>,
}

const PERMISSIONS: &str = "file-permissions";
const OWNER: &str = "file-owner";
const GROUP: &str = "file-group";
const MTIME: &str = "file-mtime";

impl PosixMeta {
    /// Reads what the object's user metadata holds; values that do not parse are
    /// ignored (the file then gets the import's defaults).
    pub fn from_attributes(a: &Attributes) -> PosixMeta {
        let get = |name: &'static str| -> Option<&str> {
            a.get(&Attribute::Metadata(name.into())).map(|v| v.as_ref())
        };
        PosixMeta {
            mode: get(PERMISSIONS).and_then(|v| u32::from_str_radix(v.trim(), 8).ok()),
            uid: get(OWNER).and_then(|v| v.trim().parse().ok()),
            gid: get(GROUP).and_then(|v| v.trim().parse().ok()),
            mtime_ns: get(MTIME).and_then(|v| v.trim().trim_end_matches("ns").parse().ok()),
        }
    }

    pub fn to_attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        let mut put = |name: &'static str, v: String| {
            a.insert(Attribute::Metadata(name.into()), AttributeValue::from(v));
        };
        if let Some(m) = self.mode {
            put(PERMISSIONS, format!("{m:07o}"));
        }
        if let Some(u) = self.uid {
            put(OWNER, u.to_string());
        }
        if let Some(g) = self.gid {
            put(GROUP, g.to_string());
        }
        if let Some(t) = self.mtime_ns {
            put(MTIME, format!("{t}ns"));
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_garbage_is_ignored() {
        let m = PosixMeta {
            mode: Some(0o100640),
            uid: Some(1000),
            gid: Some(100),
            mtime_ns: Some(1_600_000_000_123_456_789),
        };
        let a = m.to_attributes();
        assert_eq!(
            a.get(&Attribute::Metadata(PERMISSIONS.into()))
                .unwrap()
                .as_ref(),
            "0100640"
        );
        assert_eq!(PosixMeta::from_attributes(&a), m);
        let mut bad = Attributes::new();
        bad.insert(Attribute::Metadata(OWNER.into()), "root".into());
        assert_eq!(PosixMeta::from_attributes(&bad), PosixMeta::default());
    }
}
