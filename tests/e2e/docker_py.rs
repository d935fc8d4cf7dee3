//! docker-py 7 against the wharf daemon.

use crate::harness::{Daemon, stderr, stdout};

const SCRIPT: &str = r#"
import sys, docker
c = docker.DockerClient(base_url=sys.argv[1])
out = c.containers.run("busybox", "echo hi", remove=True)
assert out == b"hi\n", out
ctr = c.containers.create("busybox", ["sh", "-c", "echo created; exit 2"])
ctr.start()
res = ctr.wait()
assert res["StatusCode"] == 2, res
assert ctr.logs() == b"created\n", ctr.logs()
ctr.remove()
svc = c.containers.run("busybox", "sleep 1000", detach=True)
code, output = svc.exec_run("echo exec")
assert code == 0 and output == b"exec\n", (code, output)
code, output = svc.exec_run(["sh", "-c", "exit 3"])
assert code == 3, code
svc.remove(force=True)
assert c.containers.list(all=True) == []
print("ok")
"#;

#[test]
fn docker_py_drives_wharf() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import docker"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipping: the python docker SDK is not installed");
        return;
    }
    let d = Daemon::with_busybox();
    let out = std::process::Command::new("python3")
        .args(["-c", SCRIPT, &d.host()])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "ok", "stderr: {}", stderr(&out));
}
