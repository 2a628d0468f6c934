//! Machine topology for placing the engine's cores: which CPUs exist, which NUMA node
//! each CPU and each NIC sits on (read with hwloc, I/O devices included), and which
//! CPUs the engine's threads should be pinned to so they run next to the NIC.
//!
//! The choice itself ([`choose_cpus`]) is a pure function of a [`Machine`], so it can be
//! tested on made-up machines; only [`discover`], [`allowed_cpus`] and
//! [`pin_current_thread`] touch the system.

use std::collections::BTreeSet;

use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::{OSDeviceType, ObjectType};
use hwlocality::object::TopologyObject;
use hwlocality::topology::builder::TypeFilter;
use hwlocality::Topology;

/// One processing unit the engine may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// The index the OS uses (what `sched_setaffinity` and `/proc/cpuinfo` call it).
    pub os_index: usize,
    /// The NUMA node local to this CPU, if hwloc pins it to exactly one.
    pub numa_node: Option<usize>,
}

/// A network interface and its NUMA locality, as hwloc sees it (OS device of a PCI
/// NIC, e.g. "eth0", or its RDMA device, e.g. "mlx5_0").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    /// The NUMA node the NIC's PCI slot hangs off, if hwloc can tell exactly one.
    pub numa_node: Option<usize>,
}

/// What the engine needs to know about the machine to place its cores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    /// Every CPU hwloc reports, in os_index order.
    pub cpus: Vec<Cpu>,
    pub nics: Vec<Nic>,
    pub numa_nodes: usize,
    /// CPUs that take the completion interrupts of the engine's storage devices,
    /// busiest first (see [`storage_irq_cpus`]); empty when unknown.
    pub storage_irq_cpus: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("hwloc could not read the machine topology ({step}): {reason}")]
    Hwloc { step: &'static str, reason: String },
    #[error("asked for 0 engine cores; at least one is needed")]
    ZeroCount,
    #[error("asked for {wanted} engine core(s) but only {available} allowed CPU(s) are available")]
    TooMany { wanted: usize, available: usize },
    #[error("explicit CPU list has {given} CPU(s) but {wanted} engine core(s) were asked for")]
    CountMismatch { given: usize, wanted: usize },
    #[error("CPU {cpu} is in the explicit list but this process may not run on it (allowed: {allowed:?})")]
    NotAllowed { cpu: usize, allowed: Vec<usize> },
    #[error("CPU {0} appears more than once in the explicit list")]
    Duplicate(usize),
    #[error("the OS refused to pin this thread to CPU {0}")]
    PinRefused(usize),
}

/// CPUs that take the completion interrupts of the block devices holding `paths`,
/// busiest first: each path's device is found through sysfs (partition -> disk ->
/// its PCI function's MSI interrupts) and the interrupts' counts per CPU are read from
/// /proc/interrupts. Devices without MSI interrupts of their own (loop, device-mapper)
/// and unreadable files contribute nothing: placement then ignores storage.
pub fn storage_irq_cpus(paths: &[std::path::PathBuf]) -> Vec<usize> {
    let mut irqs = BTreeSet::new();
    for p in paths {
        irqs.extend(device_irqs(p).unwrap_or_default());
    }
    if irqs.is_empty() {
        return Vec::new();
    }
    let text = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    busiest_cpus(&text, &irqs)
}

/// The MSI interrupts of the PCI function under the block device that holds `path`.
fn device_irqs(path: &std::path::Path) -> Option<Vec<u32>> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let mut node = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    if node.join("partition").exists() {
        node = node.parent()?.to_path_buf();
    }
    let mut dir = std::fs::canonicalize(node.join("device")).ok()?;
    loop {
        let msi = dir.join("msi_irqs");
        if let Ok(entries) = std::fs::read_dir(&msi) {
            let irqs = entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            return Some(irqs);
        }
        dir = dir.parent()?.to_path_buf();
        if dir == std::path::Path::new("/sys/devices") {
            return None;
        }
    }
}

/// From /proc/interrupts text: the CPUs that handled any of `irqs`, by count, busiest
/// first (CPUs that handled none are left out).
pub fn busiest_cpus(interrupts: &str, irqs: &BTreeSet<u32>) -> Vec<usize> {
    let mut lines = interrupts.lines();
    let cpus: Vec<usize> = match lines.next() {
        Some(header) => header
            .split_whitespace()
            .filter_map(|c| c.strip_prefix("CPU")?.parse().ok())
            .collect(),
        None => return Vec::new(),
    };
    let mut counts = vec![0u64; cpus.len()];
    for line in lines {
        let mut fields = line.split_whitespace();
        let irq = fields
            .next()
            .and_then(|f| f.strip_suffix(':')?.parse::<u32>().ok());
        if !irq.is_some_and(|i| irqs.contains(&i)) {
            continue;
        }
        for (slot, field) in counts.iter_mut().zip(fields) {
            *slot += field.parse::<u64>().unwrap_or(0);
        }
    }
    let mut ranked: Vec<(u64, usize)> = counts
        .into_iter()
        .zip(cpus)
        .filter(|&(n, _)| n > 0)
        .collect();
    ranked.sort_by_key(|&(n, cpu)| (std::cmp::Reverse(n), cpu));
    ranked.into_iter().map(|(_, cpu)| cpu).collect()
}

/// Reads the machine with hwloc (I/O devices included).
pub fn discover() -> Result<Machine, TopologyError> {
    let topology = load_topology()?;
    let cpus = topology
        .objects_with_type(ObjectType::PU)
        .filter_map(|pu| {
            Some(Cpu {
                os_index: pu.os_index()?,
                numa_node: numa_node_of(pu),
            })
        })
        .collect::<Vec<_>>();
    let nics = topology
        .objects_with_type(ObjectType::OSDevice)
        .filter(|dev| is_nic(dev))
        .filter_map(|dev| {
            Some(Nic {
                name: dev.name()?.to_string_lossy().into_owned(),
                numa_node: numa_node_of(dev),
            })
        })
        .collect();
    let numa_nodes = topology.objects_with_type(ObjectType::NUMANode).count();
    let mut machine = Machine {
        cpus,
        nics,
        numa_nodes,
        storage_irq_cpus: Vec::new(),
    };
    machine.cpus.sort_by_key(|cpu| cpu.os_index);
    Ok(machine)
}

/// I/O objects are filtered out by default; "important" keeps NICs and disks with
/// their PCI parents (which carry the locality) without every bridge and USB hub.
fn load_topology() -> Result<Topology, TopologyError> {
    Topology::builder()
        .with_io_type_filter(TypeFilter::KeepImportant)
        .map_err(|e| hwloc_error("set I/O filter", e))?
        .build()
        .map_err(|e| hwloc_error("load", e))
}

fn hwloc_error(step: &'static str, err: impl std::fmt::Display) -> TopologyError {
    TopologyError::Hwloc {
        step,
        reason: err.to_string(),
    }
}

/// RDMA devices count too: a fabric provider may be configured by that name.
fn is_nic(dev: &TopologyObject) -> bool {
    matches!(
        dev.attributes(),
        Some(ObjectAttributes::OSDevice(attr))
            if matches!(attr.device_type(), OSDeviceType::Network | OSDeviceType::OpenFabrics)
    )
}

/// I/O objects have no node set of their own, so their locality is that of the
/// first non-I/O ancestor. A set of several nodes (a NIC on a host bridge shared by
/// sockets) means no node is closer than another: that is `None`.
fn numa_node_of(obj: &TopologyObject) -> Option<usize> {
    let anchor = if obj.nodeset().is_some() {
        obj
    } else {
        obj.first_non_io_ancestor()?
    };
    let nodes = anchor.nodeset()?;
    if nodes.weight() != Some(1) {
        return None;
    }
    nodes.first_set().map(usize::from)
}

/// The CPUs this thread may run on, read BEFORE anything is pinned: the mask is the
/// calling thread's, so after pinning it would be just the one CPU. Empty if the
/// mask cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect();
    cpus.sort_unstable();
    cpus
}

/// Pure: picks `count` CPUs for engine cores. An `explicit` list is used as given,
/// once checked against `allowed`. Otherwise CPUs on the NUMA node of the NIC named
/// `nic` (or of the first NIC with a known node) come first, then the rest, each
/// group in os_index order, all from `allowed`.
pub fn choose_cpus(
    machine: &Machine,
    allowed: &[usize],
    explicit: Option<&[usize]>,
    nic: Option<&str>,
    count: usize,
) -> Result<Vec<usize>, TopologyError> {
    if count == 0 {
        return Err(TopologyError::ZeroCount);
    }
    match explicit {
        Some(list) => check_explicit(allowed, list, count),
        None => pick_near_nic(machine, allowed, nic, count),
    }
}

fn check_explicit(
    allowed: &[usize],
    list: &[usize],
    count: usize,
) -> Result<Vec<usize>, TopologyError> {
    let mut seen = BTreeSet::new();
    for &cpu in list {
        if !allowed.contains(&cpu) {
            return Err(TopologyError::NotAllowed {
                cpu,
                allowed: allowed.to_vec(),
            });
        }
        if !seen.insert(cpu) {
            return Err(TopologyError::Duplicate(cpu));
        }
    }
    if list.len() != count {
        return Err(TopologyError::CountMismatch {
            given: list.len(),
            wanted: count,
        });
    }
    Ok(list.to_vec())
}

fn pick_near_nic(
    machine: &Machine,
    allowed: &[usize],
    nic: Option<&str>,
    count: usize,
) -> Result<Vec<usize>, TopologyError> {
    let near = local_nic(machine, nic).and_then(|n| n.numa_node);
    // A BTreeSet both deduplicates `allowed` and yields it in os_index order; the
    // stable sort then only moves NIC-local CPUs ahead of the others.
    let mut candidates: Vec<usize> = allowed
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // NIC locality first; among equals, the CPUs where the storage device's completion
    // interrupts land, busiest first. A polled core on the interrupt's CPU finds each
    // completion in its own cache; on another CPU, every completion crosses over (4 KiB
    // random reads ran at 0.66 of fio there against 0.9+ on the interrupt's CPU).
    let irq_rank = |cpu: usize| {
        machine
            .storage_irq_cpus
            .iter()
            .position(|&c| c == cpu)
            .unwrap_or(usize::MAX)
    };
    candidates.sort_by_key(|&cpu| {
        (
            near.is_some() && cpu_node(machine, cpu) != near,
            irq_rank(cpu),
        )
    });
    if candidates.len() < count {
        return Err(TopologyError::TooMany {
            wanted: count,
            available: candidates.len(),
        });
    }
    candidates.truncate(count);
    Ok(candidates)
}

/// The NIC whose locality steers placement: the named one, or else the first with a
/// known NUMA node. A name hwloc does not know (not a PCI device, a typo) steers
/// nothing; that is worth a warning, not a refusal to start.
fn local_nic<'m>(machine: &'m Machine, nic: Option<&str>) -> Option<&'m Nic> {
    match nic {
        Some(name) => {
            let found = machine.nics.iter().find(|n| n.name == name);
            if found.is_none() {
                tracing::warn!(
                    nic = name,
                    "hwloc does not know this NIC; placing cores without its locality"
                );
            }
            found
        }
        None => machine.nics.iter().find(|n| n.numa_node.is_some()),
    }
}

fn cpu_node(machine: &Machine, cpu: usize) -> Option<usize> {
    machine
        .cpus
        .iter()
        .find(|c| c.os_index == cpu)
        .and_then(|c| c.numa_node)
}

/// One-line description of a plan for the start-up log, e.g.
/// "cores [0, 1] near eth0 (NUMA 0); 1 NUMA node(s), 2 CPU(s)".
pub fn describe(machine: &Machine, chosen: &[usize], nic: Option<&str>) -> String {
    let place = match (local_nic(machine, nic), nic) {
        (
            Some(Nic {
                name,
                numa_node: Some(node),
            }),
            _,
        ) => format!("near {name} (NUMA {node})"),
        (
            Some(Nic {
                name,
                numa_node: None,
            }),
            _,
        ) => format!("near {name} (NUMA unknown)"),
        (None, Some(name)) => format!("near {name} (not found by hwloc)"),
        (None, None) => "no NIC locality known".to_owned(),
    };
    format!(
        "cores {chosen:?} {place}; {} NUMA node(s), {} CPU(s)",
        machine.numa_nodes,
        machine.cpus.len()
    )
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> Result<(), TopologyError> {
    // core_affinity sets the bit in a fixed-size cpu_set_t without a bounds check,
    // so an index past it would panic instead of being refused.
    let set_size = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    if cpu >= set_size || !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        return Err(TopologyError::PinRefused(cpu));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two nodes of two CPUs each, the NIC eth1 on node 1, eth0 with no known node.
    fn two_node_machine() -> Machine {
        let cpu = |os_index, node| Cpu {
            os_index,
            numa_node: Some(node),
        };
        Machine {
            cpus: vec![cpu(0, 0), cpu(1, 0), cpu(2, 1), cpu(3, 1)],
            nics: vec![
                Nic {
                    name: "eth0".into(),
                    numa_node: None,
                },
                Nic {
                    name: "eth1".into(),
                    numa_node: Some(1),
                },
            ],
            numa_nodes: 2,
            storage_irq_cpus: Vec::new(),
        }
    }

    const ALL: &[usize] = &[0, 1, 2, 3];

    #[test]
    fn prefers_cpus_near_the_named_nic() {
        let m = two_node_machine();
        assert_eq!(
            choose_cpus(&m, ALL, None, Some("eth1"), 3).unwrap(),
            [2, 3, 0]
        );
    }

    #[test]
    fn without_a_name_uses_the_first_nic_with_a_node() {
        let m = two_node_machine();
        assert_eq!(choose_cpus(&m, ALL, None, None, 2).unwrap(), [2, 3]);
    }

    #[test]
    fn nic_without_locality_or_unknown_means_os_index_order() {
        let m = two_node_machine();
        assert_eq!(choose_cpus(&m, ALL, None, Some("eth0"), 2).unwrap(), [0, 1]);
        assert_eq!(choose_cpus(&m, ALL, None, Some("ib9"), 2).unwrap(), [0, 1]);
    }

    #[test]
    fn only_allowed_cpus_are_picked() {
        let m = two_node_machine();
        let allowed = [3, 1, 0, 1];
        assert_eq!(
            choose_cpus(&m, &allowed, None, Some("eth1"), 3).unwrap(),
            [3, 0, 1]
        );
    }

    #[test]
    fn explicit_list_is_used_as_given_once_checked() {
        let m = two_node_machine();
        assert_eq!(
            choose_cpus(&m, ALL, Some(&[3, 0]), Some("eth1"), 2).unwrap(),
            [3, 0]
        );
        assert!(matches!(
            choose_cpus(&m, &[0, 1], Some(&[0, 2]), None, 2),
            Err(TopologyError::NotAllowed { cpu: 2, .. })
        ));
        assert!(matches!(
            choose_cpus(&m, ALL, Some(&[1, 1]), None, 2),
            Err(TopologyError::Duplicate(1))
        ));
        assert!(matches!(
            choose_cpus(&m, ALL, Some(&[1, 2]), None, 3),
            Err(TopologyError::CountMismatch {
                given: 2,
                wanted: 3
            })
        ));
    }

    #[test]
    fn among_equals_the_storage_interrupt_cpus_come_first() {
        let mut m = two_node_machine();
        m.storage_irq_cpus = vec![3, 1];
        // NIC on node 1 (CPUs 2, 3): node 1 first, CPU 3 (takes interrupts) before 2;
        // then node 0, CPU 1 before 0.
        assert_eq!(
            choose_cpus(&m, &[0, 1, 2, 3], None, Some("eth1"), 4).unwrap(),
            vec![3, 2, 1, 0]
        );
        m.nics.clear();
        assert_eq!(
            choose_cpus(&m, &[0, 1, 2, 3], None, None, 2).unwrap(),
            vec![3, 1]
        );
    }

    #[test]
    fn interrupt_counts_rank_cpus() {
        let text = "           CPU0       CPU1       CPU2\n \
             35:          0          1          0   PCI-MSIX  virtio1-config\n \
             36:         10      89568          0   PCI-MSIX  virtio1-req.0\n \
             38:       5000       5000       5000   PCI-MSIX  virtio2-input.0\n \
            NMI:          0          0          0   Non-maskable interrupts\n";
        let irqs: BTreeSet<u32> = [35, 36].into();
        assert_eq!(busiest_cpus(text, &irqs), vec![1, 0]);
        assert!(busiest_cpus("", &irqs).is_empty());
        assert!(busiest_cpus(text, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn too_many_and_zero_are_refused() {
        let m = two_node_machine();
        assert!(matches!(
            choose_cpus(&m, &[0, 1, 2], None, None, 4),
            Err(TopologyError::TooMany {
                wanted: 4,
                available: 3
            })
        ));
        assert!(matches!(
            choose_cpus(&m, ALL, None, None, 0),
            Err(TopologyError::ZeroCount)
        ));
    }

    #[test]
    fn describe_names_the_nic_and_its_node() {
        let m = two_node_machine();
        assert_eq!(
            describe(&m, &[2, 3], None),
            "cores [2, 3] near eth1 (NUMA 1); 2 NUMA node(s), 4 CPU(s)"
        );
        assert_eq!(
            describe(&m, &[0], Some("ib9")),
            "cores [0] near ib9 (not found by hwloc); 2 NUMA node(s), 4 CPU(s)"
        );
    }

    #[test]
    fn discovers_this_machine() {
        let machine = discover().expect("hwloc should read this machine");
        println!("{machine:#?}");
        // Disks are not part of Machine, but seeing them shows the I/O filter works.
        let topology = load_topology().unwrap();
        for dev in topology.objects_with_type(ObjectType::OSDevice) {
            println!("OS device {:?}: {:?}", dev.name(), dev.attributes());
        }
        let chosen = choose_cpus(&machine, &allowed_cpus(), None, None, 1).unwrap();
        println!("{}", describe(&machine, &chosen, None));
        assert!(!machine.cpus.is_empty());
        assert!(machine.numa_nodes >= 1);
    }

    #[test]
    fn pins_the_test_thread() {
        let allowed = allowed_cpus();
        let cpu = *allowed.last().expect("this thread may run somewhere");
        pin_current_thread(cpu).unwrap();
        assert_eq!(allowed_cpus(), [cpu]);
        assert!(pin_current_thread(usize::MAX).is_err());
    }
}
