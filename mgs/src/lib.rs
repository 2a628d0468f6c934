//! nacre-mgs: the management service (MGS), and the role keeping its servers run.
//!
//! Servers claim roles here under leases with fencing epochs; clients fetch the cluster
//! map; all over the TCP bootstrap protocol of `nacre_proto::bootstrap` (the calls
//! themselves are `nacre_mgc`'s, which clients link without this crate). The MGS is
//! never on the data path.
//!
//! - [`state`]: the pure state machine (roles, leases, epochs, the map);
//! - [`store`]: what must persist, behind one trait; [`embedded`] keeps it in redb;
//! - [`etcd`]: the etcd store and the leader election of several MGS processes;
//! - [`server`]: the TCP driver around the state machine; [`follower`] relays to the
//!   leader when this MGS is not it;
//! - [`config`]: the TOML config with its defaults;
//! - [`role`]: the servers' side of a role: lease renewal, self-fencing, the epoch their
//!   cores serve under.

pub mod config;
pub mod embedded;
pub mod etcd;
pub mod follower;
pub mod role;
pub mod server;
pub mod state;
pub mod store;

pub use config::MgsConfig;
pub use embedded::EmbeddedStore;
pub use server::{MgsServer, ServerHandle};
pub use state::{Changes, FsIdent, LeaseConfig, MgsState, Persisted, RoleRecord};
pub use store::{Store, StoreError};
