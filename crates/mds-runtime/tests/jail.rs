//! The jail against the real bubblewrap: what a jailed process can see,
//! write and reach, and that killing its group ends everything in it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mds_runtime::jail::{Jail, Mount, Network, Spec};
use mds_runtime::sandbox::{Command, Sandboxes};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// As root, jailed processes run as nobody; as anyone else, as themselves.
fn jail() -> Jail {
    let user = nix::unistd::Uid::effective()
        .is_root()
        .then_some((65534, 65534));
    let state = std::env::temp_dir().join(format!("mds-jail-test-{}", std::process::id()));
    Jail::find(user, &state).expect("bubblewrap is installed by scripts/install-deps")
}

/// A workspace the jail's user owns, under a directory it may traverse.
fn workspace(root: &Path, name: &str, jail: &Jail) -> PathBuf {
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711)).unwrap();
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    if let Some((uid, gid)) = jail.user() {
        chown(&dir, Some(uid), Some(gid)).unwrap();
    }
    dir
}

fn spec(workspace: &Path, script: &str, env: &[(&str, &str)]) -> Spec {
    Spec {
        workspace: workspace.to_path_buf(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        cwd: "/workspace".to_string(),
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        mounts: Vec::new(),
        network: Network::Host,
    }
}

/// (exit code, stdout, stderr)
async fn run(jail: &Jail, spec: &Spec) -> (i32, String, String) {
    let out = jail.command(spec).output().await.expect("bwrap runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[tokio::test]
async fn a_jailed_process_sees_only_its_workspace_and_exactly_its_env() {
    let jail = jail();
    let root = tempfile::tempdir().unwrap();
    let mine = workspace(root.path(), "a", &jail);
    let theirs = workspace(root.path(), "b", &jail);
    std::fs::write(theirs.join("secret.txt"), "not yours").unwrap();
    std::env::set_var("MDS_HOST_ONLY", "leak");

    let (code, out, err) = run(
        &jail,
        &spec(
            &mine,
            "echo hello > note.txt && cat note.txt && echo \"$DATABASE_URL|$MDS_HOST_ONLY|$HOME\"",
            &[("DATABASE_URL", "postgresql://u:p@127.0.0.1:5432/db")],
        ),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello\npostgresql://u:p@127.0.0.1:5432/db||/workspace");
    assert_eq!(
        std::fs::read_to_string(mine.join("note.txt")).unwrap(),
        "hello\n"
    );

    // The host's other places do not exist inside; system ones are read-only.
    let (_, out, _) = run(&jail, &spec(&mine, "ls /", &[])).await;
    let mut top: Vec<&str> = out.lines().collect();
    top.sort();
    for name in &top {
        assert!(
            [
                "bin",
                "dev",
                "etc",
                "lib",
                "lib32",
                "lib64",
                "libx32",
                "proc",
                "sbin",
                "tmp",
                "usr",
                "workspace"
            ]
            .contains(name),
            "unexpected /{name} in {top:?}"
        );
    }
    // No nested user namespaces (the start of many kernel exploits), and
    // a bounded /tmp.
    let (code, _, _) = run(&jail, &spec(&mine, "unshare -Ur true", &[])).await;
    assert_ne!(code, 0, "unshare -Ur worked inside the jail");
    let (_, out, _) = run(&jail, &spec(&mine, "df -k /tmp | tail -1", &[])).await;
    let tmp_kib: u64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(tmp_kib <= 256 * 1024, "{out}");
    let probe = format!(
        "cat {} 2>&1; touch /usr/x 2>&1; touch /etc/x 2>&1; ls /root 2>&1; cat /etc/shadow 2>&1 | head -1",
        theirs.join("secret.txt").display()
    );
    let (_, out, _) = run(&jail, &spec(&mine, &probe, &[])).await;
    assert!(!out.contains("not yours"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!out.contains("root:"), "{out}");

    // A minimal /etc: its own accounts and names, the host's CA
    // certificates and linker cache, and nothing else of the host's.
    let (_, out, _) = run(&jail, &spec(&mine, "ls /etc", &[])).await;
    let etc: Vec<&str> = out.lines().collect();
    for needed in [
        "passwd",
        "group",
        "hosts",
        "resolv.conf",
        "nsswitch.conf",
        "ssl",
    ] {
        assert!(etc.contains(&needed), "no /etc/{needed} in {etc:?}");
    }
    for absent in [
        "shadow",
        "gshadow",
        "sudoers",
        "ssh",
        "machine-id",
        "hostname",
        "crontab",
    ] {
        assert!(!etc.contains(&absent), "/etc/{absent} is there: {etc:?}");
    }
    let (_, out, _) = run(&jail, &spec(&mine, "id -un; getent hosts localhost", &[])).await;
    // The account commands run as is `sandbox`, unless that is root
    // itself (mds as root with no account to drop to).
    let as_root = jail.user().is_none() && nix::unistd::Uid::effective().is_root();
    let who = if as_root { "root" } else { "sandbox" };
    assert!(out.starts_with(who) && out.contains("localhost"), "{out}");

    // Its own pid namespace: it sees its own processes only.
    let (_, out, _) = run(&jail, &spec(&mine, "ls /proc | grep -c '^[0-9]'", &[])).await;
    let visible: u32 = out.parse().unwrap();
    assert!(visible <= 4, "{visible} processes visible");
}

#[tokio::test]
async fn it_reaches_loopback_services_and_mounted_volumes() {
    let jail = jail();
    let root = tempfile::tempdir().unwrap();
    let ws = workspace(root.path(), "ws", &jail);
    let volume = workspace(root.path(), "vol", &jail);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(b"pong\n").await.unwrap();
    });
    let mut s = spec(
        &ws,
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && head -1 <&3 && echo kept > /data/file"),
        &[],
    );
    s.argv[0] = "/bin/bash".into();
    s.mounts.push(Mount {
        host: volume.clone(),
        inside: "/data".into(),
        writable: true,
    });
    let (code, out, err) = run(&jail, &s).await;
    assert_eq!((code, out.as_str()), (0, "pong"), "{err}");
    server.await.unwrap();
    assert_eq!(
        std::fs::read_to_string(volume.join("file")).unwrap(),
        "kept\n"
    );
}

#[tokio::test]
async fn killing_the_group_ends_every_process_inside() {
    let jail = jail();
    let root = tempfile::tempdir().unwrap();
    let ws = workspace(root.path(), "ws", &jail);
    // A duration no other process on the machine sleeps for.
    let marker = format!("sleep 300{}", std::process::id());
    let mut child = jail
        .command(&spec(
            &ws,
            &format!("{marker} & {marker} & echo started > started; wait"),
            &[],
        ))
        .spawn()
        .unwrap();
    let pgid = child.id().unwrap() as i32;
    for _ in 0..200 {
        if ws.join("started").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ws.join("started").exists());
    killpg(Pid::from_raw(pgid), Signal::SIGKILL).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("bwrap ends when killed")
        .unwrap();
    assert!(!status.success());
    // No sleep of that jail survives: its pid namespace dies with it (the
    // kernel reaps the rest a moment after bwrap itself is gone).
    let leftover = || {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Up to 10 s: on a loaded machine the teardown can take seconds.
    for _ in 0..500 {
        if leftover().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(leftover().is_empty(), "left behind: {}", leftover());
}

/// As root, a workspace's commands run in a network namespace of its own:
/// the ports it was connected to work at their usual address, any other
/// port of the host's loopback is refused, and nothing else is routed.
#[tokio::test]
async fn a_workspace_reaches_only_the_ports_it_was_connected_to() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let sandboxes = Sandboxes::new(&root.path().join("s"), Some((65534, 65534)), true).unwrap();
    sandboxes.prepare("sb").unwrap();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        ports.push(listener.local_addr().unwrap().port());
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket.write_all(b"pong\n").await;
            }
        });
    }
    let (allowed, other) = (ports[0], ports[1]);
    sandboxes
        .connect_services("sb", &[allowed], false)
        .await
        .unwrap();
    assert_eq!(sandboxes.reach("sb"), Some((vec![allowed], false)));
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{allowed} && head -1 <&3; \
         (exec 4<>/dev/tcp/127.0.0.1/{other}) 2>&1; \
         (exec 5<>/dev/tcp/10.0.0.1/80) 2>&1; \
         readlink /proc/self/ns/net"
    );
    let finished = sandboxes
        .run(
            "sb",
            Command {
                env: Vec::new(),
                cwd: None,
                command: &format!("exec /bin/bash -c '{script}'"),
                timeout: Duration::from_secs(20),
                mounts: Vec::new(),
                networked: true,
            },
            None,
        )
        .await
        .unwrap();
    let out = finished.stdout;
    assert_eq!(out.lines().next(), Some("pong"), "{out}");
    assert!(
        out.contains(&format!("127.0.0.1/{other}: Connection refused")),
        "{out}"
    );
    assert!(out.contains("10.0.0.1/80: Network is unreachable"), "{out}");
    let inside = out.lines().last().unwrap_or("");
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(
        inside.starts_with("net:[") && inside != host.to_string_lossy(),
        "{out}"
    );

    // The instance side: mds reaches a port inside the namespace.
    let served = sandboxes.run(
        "sb",
        Command {
            env: Vec::new(),
            cwd: None,
            command: "exec python3 -m http.server 8123 --bind 127.0.0.1",
            timeout: Duration::from_secs(3),
            mounts: Vec::new(),
            networked: true,
        },
        None,
    );
    let probe = async {
        for _ in 0..100 {
            if sandboxes.connect("sb", 8123).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    let (_, reached) = tokio::join!(served, probe);
    assert!(reached, "the server inside was not reachable from mds");
    // Not from the host's own loopback.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", 8123))
        .await
        .is_err());
    sandboxes.remove("sb").await.unwrap();
    assert_eq!(sandboxes.reach("sb"), None);
}
