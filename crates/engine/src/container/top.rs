//! `top`: the host's `ps`, limited to the container's processes (as Docker does).

use std::sync::Arc;

use wharf_api::models::ContainerTopResponse;

use super::ContainerError;
use crate::Engine;

impl Engine {
    pub async fn top(
        self: &Arc<Self>,
        key: &str,
        ps_args: Option<&str>,
    ) -> Result<ContainerTopResponse, ContainerError> {
        let c = self.registry().lookup(key)?;
        let (id, status) = {
            let r = c.record();
            (r.id.clone(), r.state.status)
        };
        status.guard_signal(&id)?;
        let pids = self.container_pids(&id);
        let args: Vec<String> = ps_args
            .filter(|a| !a.is_empty())
            .unwrap_or("-ef")
            .split_whitespace()
            .map(String::from)
            .collect();
        let out = tokio::process::Command::new("ps")
            .args(&args)
            .output()
            .await
            .map_err(|e| ContainerError::Invalid(format!("running ps: {e}")))?;
        if !out.status.success() {
            return Err(ContainerError::Invalid(format!(
                "ps: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        parse_ps(&String::from_utf8_lossy(&out.stdout), &pids)
    }

    /// The host pids in the container's cgroup.
    pub(crate) fn container_pids(&self, id: &str) -> Vec<u32> {
        let parent = self.cfg.cgroup_parent.trim_matches('/');
        let candidates = [
            format!("/sys/fs/cgroup/pids/{parent}/{id}/cgroup.procs"),
            format!("/sys/fs/cgroup/memory/{parent}/{id}/cgroup.procs"),
            format!("/sys/fs/cgroup/{parent}/{id}/cgroup.procs"),
        ];
        candidates
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

fn parse_ps(output: &str, pids: &[u32]) -> Result<ContainerTopResponse, ContainerError> {
    let mut lines = output.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let pid_col = header
        .iter()
        .position(|h| h == "PID")
        .ok_or_else(|| ContainerError::Invalid("Couldn't find PID field in ps output".into()))?;
    let mut processes = Vec::new();
    for line in lines {
        let mut fields: Vec<String> = Vec::new();
        let mut rest = line.trim_start();
        while fields.len() + 1 < header.len() {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            fields.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
        fields.push(rest.to_string());
        if fields
            .get(pid_col)
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| pids.contains(&p))
        {
            processes.push(fields);
        }
    }
    Ok(ContainerTopResponse {
        titles: Some(header),
        processes: Some(processes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_container_pids() {
        let out = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 /sbin/init splash\nroot 42 1 0 10:01 ? 00:00:00 sleep 1000\n";
        let top = parse_ps(out, &[42]).unwrap();
        assert_eq!(
            top.processes.unwrap(),
            vec![vec![
                "root",
                "42",
                "1",
                "0",
                "10:01",
                "?",
                "00:00:00",
                "sleep 1000"
            ]]
        );
    }
}
