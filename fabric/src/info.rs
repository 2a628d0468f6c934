//! Provider discovery: what `fi_getinfo` offers, and picking one by name.
//!
//! The hints always carry the memory-registration bits of EFA (FI_MR_LOCAL,
//! FI_MR_VIRT_ADDR, FI_MR_ALLOCATED, FI_MR_PROV_KEY, FI_MR_ENDPOINT) so that a provider
//! which needs them can match; the rest of the layer then obeys whatever `mr_mode`
//! the provider returns, and behaves as EFA requires even when it returns none.

use std::ffi::{CStr, CString};
use std::ptr;

use nacre_sys as sys;

use crate::error::{call_error, ErrorKind, Result};

/// The memory-registration modes nacre can honour; EFA asks for the first four.
pub const MR_MODE_SUPPORTED: u64 = sys::FI_MR_LOCAL
    | sys::FI_MR_VIRT_ADDR
    | sys::FI_MR_ALLOCATED
    | sys::FI_MR_PROV_KEY
    | sys::FI_MR_ENDPOINT;

/// Capabilities every nacre endpoint needs: messages both ways and RMA both ways.
pub const CAPS: u64 = sys::FI_MSG
    | sys::FI_RMA
    | sys::FI_SEND
    | sys::FI_RECV
    | sys::FI_READ
    | sys::FI_WRITE
    | sys::FI_REMOTE_READ
    | sys::FI_REMOTE_WRITE;

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Provider as a user names it: `tcp`, `sockets`, `shm`, `udp`, `efa`, `verbs`, or a
    /// full layered name such as `tcp;ofi_rxm`. None: `FI_PROVIDER`, else any provider.
    pub provider: Option<String>,
    /// Local address to serve from (with FI_SOURCE), e.g. "127.0.0.1".
    pub node: Option<String>,
    /// Local service (port) for the endpoint; None lets the provider pick.
    pub service: Option<String>,
    /// Domain name filter (`-d`), as fi_pingpong takes it.
    pub domain: Option<String>,
    /// Ask for FI_SOURCE: every received message says who sent it. Servers do (they
    /// take a session's messages only from the peer it was issued to); clients do not
    /// (replies are matched by request id), and spare its cost: on shm it took a sixth
    /// of a metadata server's rate (docs/fabric.md).
    pub sources: bool,
}

impl Selection {
    /// `name` from its default source address (see [`default_node`]).
    pub fn provider(name: &str) -> Self {
        Selection {
            provider: Some(name.to_string()),
            node: default_node(name).map(str::to_string),
            ..Default::default()
        }
    }

    /// `name` served from `node` when one is given; else, for the providers addressed
    /// by IP, from the local address that routes to `peer` (the MGS, `host:port`, the
    /// first of a list): loopback when the MGS is on loopback, the address other hosts
    /// reach this one at otherwise. So a client or server on another host than the MGS
    /// serves from an address its peers can reach without being told.
    pub fn toward(name: &str, node: Option<String>, peer: &str) -> Self {
        let mut sel = Selection::provider(name);
        if node.is_some() {
            sel.node = node;
        } else if sel.node.is_some() {
            if let Some(src) = source_for(peer) {
                sel.node = Some(src);
            }
        }
        sel
    }

    /// The provider to ask for: the explicit one, else `FI_PROVIDER` (as fabtests do).
    pub fn wanted_provider(&self) -> Option<String> {
        self.provider
            .clone()
            .or_else(|| std::env::var("FI_PROVIDER").ok().filter(|s| !s.is_empty()))
    }
}

/// Where an endpoint of `provider` serves from when nobody says: loopback for the
/// providers addressed by IP (tcp, sockets, udp), so that a one-machine cluster stays off
/// the network; none for the others (shm names itself, and on EFA or verbs the node is a
/// device address that only the provider knows): the provider picks, and servers publish
/// whatever fi_getname returns.
pub fn default_node(provider: &str) -> Option<&'static str> {
    match provider {
        "tcp" | "tcp;ofi_rxm" | "sockets" | "udp" | "udp;ofi_rxd" => Some("127.0.0.1"),
        _ => None,
    }
}

/// The local address a packet to `peer` (`host:port`, or the first of a
/// comma-separated list) leaves from, as the kernel's routes choose it (a connected UDP
/// socket, which sends nothing). None when `peer` does not resolve or no route leads
/// there.
pub fn source_for(peer: &str) -> Option<String> {
    use std::net::{ToSocketAddrs, UdpSocket};
    let first = peer.split(',').next()?.trim();
    let addr = first.to_socket_addrs().ok()?.next()?;
    let any = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(any).ok()?;
    sock.connect(addr).ok()?;
    Some(sock.local_addr().ok()?.ip().to_string())
}

/// Maps the short names users type to libfabric's layered provider names.
pub fn provider_query(name: &str) -> &str {
    match name {
        "tcp" => "tcp;ofi_rxm",
        "udp" => "udp;ofi_rxd",
        "verbs" => "verbs;ofi_rxm",
        other => other,
    }
}

/// One fi_info entry, owned (duplicated out of fi_getinfo's list).
pub struct Info {
    raw: *mut sys::fi_info,
}

impl Info {
    /// The first provider that fits `sel` for an RDM endpoint with nacre's needs.
    pub fn find(sel: &Selection) -> Result<Info> {
        let wanted = sel.wanted_provider();
        let list = InfoList::query(sel, wanted.as_deref())?;
        let first = list.iter().next().ok_or_else(|| ErrorKind::NoProvider {
            wanted: describe(sel, wanted.as_deref()),
            reason: "fi_getinfo returned an empty list".into(),
        })?;
        // SAFETY: `first` points into the live list; fi_dupinfo deep-copies one entry.
        let raw = unsafe { sys::fi_dupinfo(first) };
        if raw.is_null() {
            return Err(call_error("fi_dupinfo", -(libc::ENOMEM as isize)));
        }
        Ok(Info { raw })
    }

    pub(crate) fn raw(&self) -> *mut sys::fi_info {
        self.raw
    }

    fn get(&self) -> &sys::fi_info {
        // SAFETY: raw is a valid fi_info owned by self for self's lifetime.
        unsafe { &*self.raw }
    }

    pub fn summary(&self) -> ProviderSummary {
        ProviderSummary::of(self.get())
    }

    /// Whether received messages say who sent them (FI_SOURCE was asked and given).
    pub fn sources(&self) -> bool {
        self.get().caps & sys::FI_SOURCE != 0
    }

    pub fn mr_mode(&self) -> u64 {
        // SAFETY: fi_getinfo always fills domain_attr for a returned entry.
        unsafe { (*self.get().domain_attr).mr_mode as u64 }
    }

    /// Bytes of a memory key the provider takes (8 when it does not say).
    pub fn mr_key_size(&self) -> usize {
        // SAFETY: fi_getinfo always fills domain_attr for a returned entry.
        match unsafe { (*self.get().domain_attr).mr_key_size } {
            0 => 8,
            n => n.min(8),
        }
    }

    pub fn inject_size(&self) -> usize {
        // SAFETY: tx_attr is filled for every returned entry.
        unsafe { (*self.get().tx_attr).inject_size }
    }

    pub fn max_msg_size(&self) -> usize {
        // SAFETY: ep_attr is filled for every returned entry.
        unsafe { (*self.get().ep_attr).max_msg_size }
    }

    pub fn tx_size(&self) -> usize {
        // SAFETY: tx_attr is filled for every returned entry.
        unsafe { (*self.get().tx_attr).size }
    }

    pub fn rx_size(&self) -> usize {
        // SAFETY: rx_attr is filled for every returned entry.
        unsafe { (*self.get().rx_attr).size }
    }
}

impl Drop for Info {
    fn drop(&mut self) {
        // SAFETY: raw came from fi_dupinfo and is freed once.
        unsafe { sys::fi_freeinfo(self.raw) }
    }
}

/// The list fi_getinfo returns, freed on drop.
struct InfoList {
    head: *mut sys::fi_info,
}

impl InfoList {
    fn query(sel: &Selection, provider: Option<&str>) -> Result<InfoList> {
        let hints = Hints::new(provider, sel.domain.as_deref(), sel.sources)?;
        // shm names its shared-memory region after the source node: given an IP address,
        // every process on the host would claim the same region (fi_enable: EBUSY). Its
        // addresses are local names, so the node the caller serves from does not apply.
        let local_only = provider == Some("shm");
        let node = match &sel.node {
            Some(n) if !local_only => Some(cstring(n)?),
            _ => None,
        };
        let service = match &sel.service {
            Some(s) if !local_only => Some(cstring(s)?),
            _ => None,
        };
        let flags = if node.is_some() || service.is_some() {
            sys::FI_SOURCE
        } else {
            0
        };
        let mut head = ptr::null_mut();
        // SAFETY: hints is a valid fi_info; node/service are NUL-terminated or null; head
        // receives a list we own and free in Drop.
        let rc = unsafe {
            sys::fi_getinfo(
                sys::NACRE_FI_VERSION,
                node.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
                service.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
                flags,
                hints.raw,
                &mut head,
            )
        };
        if rc != 0 {
            let err = call_error("fi_getinfo", rc as isize);
            return Err(ErrorKind::NoProvider {
                wanted: describe(sel, provider),
                reason: err.to_string(),
            }
            .into());
        }
        Ok(InfoList { head })
    }

    fn iter(&self) -> impl Iterator<Item = *mut sys::fi_info> + '_ {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            if cur.is_null() {
                return None;
            }
            let this = cur;
            // SAFETY: cur is a live node of the list owned by self.
            cur = unsafe { (*cur).next };
            Some(this)
        })
    }
}

impl Drop for InfoList {
    fn drop(&mut self) {
        if !self.head.is_null() {
            // SAFETY: head came from fi_getinfo and is freed once.
            unsafe { sys::fi_freeinfo(self.head) }
        }
    }
}

/// The fi_info hints nacre asks with.
struct Hints {
    raw: *mut sys::fi_info,
}

impl Hints {
    fn new(provider: Option<&str>, domain: Option<&str>, sources: bool) -> Result<Hints> {
        // Every use of a fabric starts here: the first one loads libfabric.
        sys::dynamic::load().map_err(ErrorKind::Library)?;
        // SAFETY: fi_allocinfo returns a zeroed fi_info with all attr structs allocated.
        let raw = unsafe { sys::fi_allocinfo() };
        if raw.is_null() {
            return Err(call_error("fi_allocinfo", -(libc::ENOMEM as isize)));
        }
        let hints = Hints { raw };
        // SAFETY: raw and its attr pointers are valid (fi_allocinfo); the strings we store
        // are strdup'ed because fi_freeinfo frees them.
        unsafe {
            let h = &mut *raw;
            h.caps = match sources {
                true => CAPS | sys::FI_SOURCE,
                false => CAPS,
            };
            // Every operation has a slot that starts with a struct fi_context2, so providers
            // that need context storage (FI_CONTEXT, FI_CONTEXT2) match too.
            h.mode = sys::FI_CONTEXT | sys::FI_CONTEXT2;
            (*h.ep_attr).type_ = sys::fi_ep_type_FI_EP_RDM;
            let d = &mut *h.domain_attr;
            d.mr_mode = MR_MODE_SUPPORTED as i32;
            d.threading = sys::fi_threading_FI_THREAD_DOMAIN;
            d.control_progress = sys::fi_progress_FI_PROGRESS_MANUAL;
            d.data_progress = sys::fi_progress_FI_PROGRESS_MANUAL;
            d.resource_mgmt = sys::fi_resource_mgmt_FI_RM_ENABLED;
            d.av_type = sys::fi_av_type_FI_AV_TABLE;
            if let Some(name) = domain {
                d.name = strdup(name)?;
            }
            if let Some(name) = provider {
                (*h.fabric_attr).prov_name = strdup(provider_query(name))?;
            }
        }
        Ok(hints)
    }
}

impl Drop for Hints {
    fn drop(&mut self) {
        // SAFETY: raw came from fi_allocinfo; fi_freeinfo frees it and the strdup'ed strings.
        unsafe { sys::fi_freeinfo(self.raw) }
    }
}

/// What a provider offers, in plain values (for listing and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSummary {
    pub provider: String,
    pub fabric: String,
    pub domain: String,
    pub mr_mode: u64,
    pub inject_size: usize,
    pub max_msg_size: usize,
    pub tx_size: usize,
    pub rx_size: usize,
}

impl ProviderSummary {
    fn of(info: &sys::fi_info) -> ProviderSummary {
        // SAFETY: every entry fi_getinfo returns has fabric/domain/ep/tx/rx attrs filled,
        // with NUL-terminated names (or null).
        unsafe {
            ProviderSummary {
                provider: text((*info.fabric_attr).prov_name),
                fabric: text((*info.fabric_attr).name),
                domain: text((*info.domain_attr).name),
                mr_mode: (*info.domain_attr).mr_mode as u64,
                inject_size: (*info.tx_attr).inject_size,
                max_msg_size: (*info.ep_attr).max_msg_size,
                tx_size: (*info.tx_attr).size,
                rx_size: (*info.rx_attr).size,
            }
        }
    }

    /// mr_mode as the FI_MR_* names it holds.
    pub fn mr_mode_names(&self) -> String {
        mr_mode_names(self.mr_mode)
    }
}

pub fn mr_mode_names(mode: u64) -> String {
    const NAMES: [(u64, &str); 6] = [
        (sys::FI_MR_LOCAL, "LOCAL"),
        (sys::FI_MR_VIRT_ADDR, "VIRT_ADDR"),
        (sys::FI_MR_ALLOCATED, "ALLOCATED"),
        (sys::FI_MR_PROV_KEY, "PROV_KEY"),
        (sys::FI_MR_ENDPOINT, "ENDPOINT"),
        (sys::FI_MR_RAW, "RAW"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| mode & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join("|")
    }
}

/// Every RDM provider fi_getinfo offers for nacre's capabilities (FI_PROVIDER applies).
pub fn list_providers(node: Option<&str>) -> Result<Vec<ProviderSummary>> {
    let sel = Selection {
        node: node.map(str::to_string),
        ..Default::default()
    };
    let list = InfoList::query(&sel, None)?;
    // SAFETY: each pointer is a live entry of `list`.
    Ok(list
        .iter()
        .map(|i| ProviderSummary::of(unsafe { &*i }))
        .collect())
}

fn describe(sel: &Selection, provider: Option<&str>) -> String {
    format!(
        "provider {} (RDM, MSG+RMA){}",
        provider.map_or("<any>".to_string(), |p| format!("`{}`", provider_query(p))),
        sel.node
            .as_deref()
            .map_or(String::new(), |n| format!(" on {n}"))
    )
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| {
        ErrorKind::NoProvider {
            wanted: s.replace('\0', "\\0"),
            reason: "name contains a NUL byte".into(),
        }
        .into()
    })
}

/// A malloc'ed copy, as fields that fi_freeinfo frees must be.
fn strdup(s: &str) -> Result<*mut libc::c_char> {
    let c = cstring(s)?;
    // SAFETY: c is NUL-terminated; strdup returns malloc'ed memory or null.
    let p = unsafe { libc::strdup(c.as_ptr()) };
    if p.is_null() {
        Err(call_error("strdup", -(libc::ENOMEM as isize)))
    } else {
        Ok(p)
    }
}

fn text(p: *const libc::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: libfabric names are NUL-terminated strings that outlive this call.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_providers_serve_from_the_address_that_routes_to_the_mgs() {
        let lo = |s: Option<String>| s.and_then(|a| a.parse::<std::net::IpAddr>().ok());
        assert!(lo(source_for("127.0.0.1:7450")).is_some_and(|a| a.is_loopback()));
        assert!(lo(source_for("127.0.0.1:7450,10.9.9.9:1")).is_some_and(|a| a.is_loopback()));
        assert_eq!(source_for("no-such-host.invalid:7450"), None);
        assert_eq!(source_for("not an address"), None);
        let tcp = Selection::toward("tcp", None, "127.0.0.1:7450");
        assert!(lo(tcp.node).is_some_and(|a| a.is_loopback()));
        // Told: kept. shm names itself: no node. Unresolvable: the default.
        let told = Selection::toward("tcp", Some("10.1.1.1".into()), "127.0.0.1:7450");
        assert_eq!(told.node.as_deref(), Some("10.1.1.1"));
        assert_eq!(Selection::toward("shm", None, "127.0.0.1:7450").node, None);
        let lost = Selection::toward("sockets", None, "no-such-host.invalid:7450");
        assert_eq!(lost.node.as_deref(), Some("127.0.0.1"));
    }
}
