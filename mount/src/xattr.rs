//! The layout as an extended attribute, as Lustre shows `lustre.lov`:
//! `getfattr -n nacre.layout FILE` prints a file's striping and OSTs, and
//! `setfattr -n nacre.layout -v "stripe_count=4 stripe_size=1048576" DIR` sets a
//! directory's default striping (or a file's, before its first write), with
//! `mirror_count=N` for mirrored files.
//!
//! `getfattr -n nacre.hsm FILE` shows a file's data repository state (`released`,
//! `cached`, `dirty` or `exported`, then ` conflict` if there is one), as
//! `lfs hsm_state` does; a file outside linked directories has none (ENODATA). It is
//! read-only and not listed (listxattr would have to ask the MDS for every file).

use fuser::ReplyXattr;
use nacre_client::{errno, Client};
use nacre_proto::layout::{FirstOst, StripeCount, StripeSpec};
use nacre_proto::meta::hsm::FileState;
use nacre_proto::meta::{Creds, Reply, Request};

pub const LAYOUT: &[u8] = b"nacre.layout";
pub const HSM: &[u8] = b"nacre.hsm";
/// What listxattr shows: NUL-terminated names.
pub const LIST: &[u8] = b"nacre.layout\0";

/// `stripe_count=N stripe_size=S stripe_offset=I`, and for a file ` osts=a,b,c`; a
/// mirrored file adds ` mirror_count=M mirror_osts=a,b;c,d` and ` stale=k,...` when a
/// mirror is stale.
pub fn get(client: &Client, creds: &Creds, ino: u64, name: &[u8]) -> Result<Vec<u8>, i32> {
    if name == HSM {
        return hsm_state(client, ino);
    }
    if name != LAYOUT {
        return Err(libc::ENODATA);
    }
    let text = match client.request_as(creds, &Request::GetLayout { ino }) {
        Ok(Reply::Layout(l)) => {
            let osts = |s: &nacre_proto::layout::StripedLayout| {
                let v: Vec<String> = s.objects.iter().map(|o| o.ost.to_string()).collect();
                v.join(",")
            };
            let g = l.geometry();
            let mut text = format!(
                "stripe_count={} stripe_size={} stripe_offset={} osts={}",
                g.objects.len(),
                g.stripe_size,
                g.objects.first().map_or(0, |o| o.ost),
                osts(g)
            );
            if l.mirrors.len() > 1 {
                let all: Vec<String> = l.mirrors.iter().map(|m| osts(&m.stripes)).collect();
                text += &format!(
                    " mirror_count={} mirror_osts={}",
                    l.mirrors.len(),
                    all.join(";")
                );
                let stale: Vec<String> = (0..l.mirrors.len())
                    .filter(|&k| l.mirrors[k].stale)
                    .map(|k| k.to_string())
                    .collect();
                if !stale.is_empty() {
                    text += &format!(" stale={}", stale.join(","));
                }
            }
            text
        }
        Ok(Reply::DefaultLayout(s)) => spec_text(&s),
        Ok(_) => return Err(libc::EIO),
        Err(e) => return Err(errno(&e)),
    };
    Ok(text.into_bytes())
}

fn hsm_state(client: &Client, ino: u64) -> Result<Vec<u8>, i32> {
    let s = client.repo_state_ino(ino).map_err(|e| errno(&e))?;
    if s.state == FileState::None {
        return Err(libc::ENODATA);
    }
    let mut text = s.state.name().to_string();
    if s.conflict {
        text += " conflict";
    }
    Ok(text.into_bytes())
}

fn spec_text(s: &StripeSpec) -> String {
    let mut text = format!(
        "stripe_count={} stripe_size={} stripe_offset={}",
        s.count.lfs(),
        s.stripe_size,
        s.first.lfs()
    );
    if s.mirrors > 1 {
        text += &format!(" mirror_count={}", s.mirrors);
    }
    text
}

/// Parses `stripe_count=N stripe_size=S [stripe_offset=I] [mirror_count=M]` (-1: all
/// OSTs / any); without a mirror count, the file system's (`mirrors`).
pub fn parse(value: &[u8], mirrors: u32) -> Result<StripeSpec, i32> {
    let text = std::str::from_utf8(value).map_err(|_| libc::EINVAL)?;
    let mut spec = StripeSpec {
        mirrors,
        ..StripeSpec::default()
    };
    for field in text.trim_end_matches('\0').split_whitespace() {
        let (k, v) = field.split_once('=').ok_or(libc::EINVAL)?;
        let v: i64 = v.parse().map_err(|_| libc::EINVAL)?;
        match k {
            "stripe_count" => spec.count = StripeCount::from_lfs(v).ok_or(libc::EINVAL)?,
            "stripe_size" => spec.stripe_size = u32::try_from(v).map_err(|_| libc::EINVAL)?,
            "stripe_offset" => spec.first = FirstOst::from_lfs(v).ok_or(libc::EINVAL)?,
            "mirror_count" => spec.mirrors = u32::try_from(v).map_err(|_| libc::EINVAL)?,
            _ => return Err(libc::EINVAL),
        }
    }
    spec.validate().map_err(|_| libc::EINVAL)?;
    Ok(spec)
}

pub fn set(client: &Client, creds: &Creds, ino: u64, name: &[u8], value: &[u8]) -> Result<(), i32> {
    if name == HSM {
        return Err(libc::EPERM); // the state changes by export, release and loads
    }
    if name != LAYOUT {
        // No other attributes are stored.
        return Err(libc::ENOTSUP);
    }
    let spec = parse(value, client.map().layout.mirror_count)?;
    client
        .request_as(creds, &Request::SetLayout { ino, spec })
        .map(|_| ())
        .map_err(|e| errno(&e))
}

/// Answers a get or list with `value`: its size when asked for 0 bytes, ERANGE when
/// the caller's buffer is too small.
pub fn answer(reply: ReplyXattr, size: u32, value: &[u8]) {
    match size {
        0 => reply.size(value.len() as u32),
        n if (n as usize) < value.len() => reply.error(fuser::Errno::ERANGE),
        _ => reply.data(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_text_parses_and_refuses_nonsense() {
        let s = parse(b"stripe_count=4 stripe_size=1048576", 1).unwrap();
        assert_eq!(s.count, StripeCount::Count(4));
        assert_eq!(s.mirrors, 1);
        assert_eq!(s.stripe_size, 1 << 20);
        assert_eq!(s.first, FirstOst::Any);
        let s = parse(b"stripe_count=-1 stripe_size=65536 stripe_offset=2\0", 2).unwrap();
        assert_eq!((s.count, s.first), (StripeCount::All, FirstOst::Index(2)));
        assert_eq!(s.mirrors, 2, "the file system's mirror count");
        assert_eq!(parse(&spec_text(&s).into_bytes(), 1).unwrap(), s);
        let s = parse(b"stripe_count=2 stripe_size=65536 mirror_count=3", 1).unwrap();
        assert_eq!(s.mirrors, 3);
        for bad in [
            &b"stripe_count=0"[..],
            b"stripe_size=1000",
            b"colour=blue",
            b"x",
            b"\xff",
            b"mirror_count=0",
            b"mirror_count=5",
        ] {
            assert_eq!(parse(bad, 1), Err(libc::EINVAL), "{bad:?}");
        }
    }
}
