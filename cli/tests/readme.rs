//! The README's quick start cannot rot: every command of its `console` blocks runs here, in
//! order, as a new user would type it, on the machine its prompt names (`laptop$`,
//! `desktop$`: a sandbox each, with its own home directory, hence its own default data
//! directory).
//!
//! What changes, and why: sizes are small (`testnet run` with 4 nodes, `testnet` with 3,
//! calls of 1 s); a node listens on loopback with ports the system picks and without mDNS (a
//! test machine is shared); the bootstrap address in the README is replaced by the laptop
//! node's real one. `cargo test --workspace` is not run again: this test is part of it.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Background, Sandbox};

const READY: Duration = Duration::from_secs(60);

/// The README's console commands: (machine, words).
fn commands() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string("../README.md").expect("README.md");
    let mut commands = Vec::new();
    let mut in_console = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_console = line.trim() == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        let (machine, command) = line
            .split_once("$ ")
            .unwrap_or_else(|| panic!("a console line without a prompt: {line:?}"));
        let machine = if machine.is_empty() {
            "laptop"
        } else {
            machine
        };
        commands.push((machine.to_owned(), words(command)));
    }
    commands
}

/// Splits a command line into words; double quotes group.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// One machine of the walk-through: its sandbox and the node running there.
struct Machine {
    sandbox: Sandbox,
    node: Option<Background>,
    bootstrap: Option<String>,
}

#[test]
fn every_readme_command_runs() {
    let commands = commands();
    assert!(
        commands.len() >= 10,
        "the quick start lost its commands: {commands:?}"
    );
    let mut machines: HashMap<String, Machine> = HashMap::new();
    let mut laptop_bootstrap = None;
    for (name, words) in commands {
        let machine = machines.entry(name.clone()).or_insert_with(|| Machine {
            sandbox: Sandbox::new(),
            node: None,
            bootstrap: None,
        });
        let shown = words.join(" ");
        let args: Vec<String> = match words.first().map(String::as_str) {
            Some("cargo") if shown == "cargo test --workspace" => continue,
            Some("cargo") if shown.starts_with("cargo run --release -p p2psip-cli -- ") => {
                words[6..].to_vec()
            }
            Some("p2psip") => words[1..].to_vec(),
            _ => panic!("the README shows a command this test does not know: {shown}"),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["testnet", "run", rest @ ..] => {
                assert!(rest.is_empty(), "{shown}: the test adds its own sizes");
                let report = machine.sandbox.path("report");
                let report = report.to_str().expect("UTF-8 path");
                let run = machine.sandbox.run(&[
                    "testnet", "run", "--nodes", "4", "--users", "4", "--calls", "6", "--report",
                    report,
                ]);
                assert_eq!(run.code, 0, "{shown}: {run:?}");
                assert!(run.stdout.contains("registrations 4/4"), "{run:?}");
                assert!(run.stdout.contains("calls 6/6"), "{run:?}");
                for file in ["report.json", "report.html"] {
                    assert!(
                        machine.sandbox.path("report").join(file).is_file(),
                        "{file}"
                    );
                }
            }
            ["testnet", "--nodes", _] => {
                let mut testnet = machine
                    .sandbox
                    .spawn("testnet", &["testnet", "--nodes", "3"]);
                wait_for_output(&mut testnet, "Ctrl-C stops the testnet");
                let table = testnet.output().0;
                assert_eq!(
                    table.lines().filter(|l| l.contains("12D3KooW")).count(),
                    3,
                    "{table}"
                );
                assert_eq!(testnet.interrupt(Duration::from_secs(60)), 0, "{shown}");
            }
            ["node", rest @ ..] => {
                let ready = machine.sandbox.path("ready.json");
                let ready = ready.to_str().expect("UTF-8 path").to_owned();
                let mut node_args = vec!["node"];
                let mut rest = rest.iter();
                while let Some(arg) = rest.next() {
                    node_args.push(arg);
                    if *arg == "--bootstrap" {
                        rest.next();
                        let real: &String = laptop_bootstrap
                            .as_ref()
                            .expect("a node to bootstrap from runs first");
                        node_args.push(real);
                    }
                }
                node_args.extend([
                    "--sip-listen",
                    "127.0.0.1:0",
                    "--listen",
                    "/ip4/127.0.0.1/udp/0/quic-v1",
                    "--no-mdns",
                    "--ready-file",
                    &ready,
                ]);
                let mut node = machine.sandbox.spawn("node", &node_args);
                let text = node.wait_for_file(std::path::Path::new(&ready), READY);
                let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                let addr = json["overlay_addrs"][0]
                    .as_str()
                    .expect("an address")
                    .to_owned();
                machine.bootstrap = Some(addr.clone());
                laptop_bootstrap.get_or_insert(addr);
                machine.node = Some(node);
            }
            ["call", target, "--duration", _] => {
                let run = machine.sandbox.run(&["call", target, "--duration", "1"]);
                let out = run.ok();
                assert!(
                    out.contains("answered") && out.contains("ended by you"),
                    "{out}"
                );
            }
            _ => {
                let run = machine.sandbox.run(&args);
                assert_eq!(run.code, 0, "{shown}: {run:?}");
            }
        }
    }
    for (name, machine) in &mut machines {
        if let Some(node) = machine.node.as_mut() {
            assert_eq!(node.interrupt(Duration::from_secs(60)), 0, "{name}'s node");
        }
    }
    assert!(
        machines.values().filter(|m| m.bootstrap.is_some()).count() >= 2,
        "the walk-through runs two nodes"
    );
}

/// Waits until the process has printed `text` on stdout.
fn wait_for_output(process: &mut Background, text: &str) {
    let deadline = std::time::Instant::now() + READY;
    loop {
        if process.output().0.contains(text) {
            return;
        }
        if let Some(status) = process.child.try_wait().expect("waitable") {
            panic!(
                "exited ({status}) before printing {text:?}: {:?}",
                process.output()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {text:?} within {READY:?}: {:?}",
            process.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
