//! nacre-oss: the object storage server. Object storage targets (OSTs) are local
//! directories holding one file per object; object I/O runs on engine cores, bulk data
//! moving by RMA between the client's memory and the core's registered pool.
