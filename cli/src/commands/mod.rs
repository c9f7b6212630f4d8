//! The subcommands, one module each: its `Args` (clap derive) and `run(args)`; `remote` holds
//! the commands that talk to a running node.

pub(crate) mod ca;
pub(crate) mod config;
pub(crate) mod init;
pub(crate) mod node;
pub(crate) mod remote;
pub(crate) mod testnet;
pub(crate) mod user;
