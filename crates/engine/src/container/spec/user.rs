//! Docker's `-u` forms, resolved against the container's own `/etc/passwd` and `/etc/group`:
//! "", "name", "uid", "uid:gid", "name:group", ... Supplementary groups come from `/etc/group`
//! when no group was given, as Docker (runc's user package) does.

use std::path::{Component, Path, PathBuf};

use super::SpecError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The user's home from passwd ("/" when unknown), for `HOME` when the env has none.
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `path` (absolute, inside the container) under `root` without leaving it: symlinks
/// are followed as if `root` were `/`.
pub fn resolve_in_root(root: &Path, path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    let mut pending: Vec<String> = path
        .split('/')
        .rev()
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => {}
            ".." => {
                out.pop();
            }
            name => {
                let candidate = out.join(name);
                let host = root.join(&candidate);
                match std::fs::read_link(&host) {
                    Ok(target) if hops < 40 => {
                        hops += 1;
                        if target.is_absolute() {
                            out = PathBuf::new();
                        }
                        let parts: Vec<String> = target
                            .components()
                            .filter_map(|c| match c {
                                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                                Component::ParentDir => Some("..".into()),
                                _ => None,
                            })
                            .collect();
                        pending.extend(parts.into_iter().rev());
                    }
                    _ => out = candidate,
                }
            }
        }
    }
    root.join(out)
}

fn read_etc(root: &Path, file: &str) -> String {
    std::fs::read_to_string(resolve_in_root(root, file)).unwrap_or_default()
}

fn passwd(root: &Path) -> Vec<PasswdEntry> {
    read_etc(root, "/etc/passwd")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn groups(root: &Path) -> Vec<GroupEntry> {
    read_etc(root, "/etc/group")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves a Docker user spec against the rootfs, then adds `group_add` (names or ids).
pub fn resolve(root: &Path, spec: &str, group_add: &[String]) -> Result<ExecUser, SpecError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = passwd(root);
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let numeric = user_part.parse::<u32>().ok();
    let entry = users.iter().find(|u| match numeric {
        Some(n) => u.uid == n,
        None => u.name == user_part,
    });
    let (uid, mut gid, name, home) = match (entry, numeric) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name.clone()), e.home.clone()),
        (None, Some(n)) => (n, 0, None, "/".to_string()),
        (None, None) => {
            return Err(SpecError::Invalid(format!(
                "unable to find user {user_part}: no matching entries in passwd file"
            )));
        }
    };
    let all_groups = groups(root);
    let find_group = |g: &str| -> Result<u32, SpecError> {
        if let Ok(n) = g.parse::<u32>() {
            return Ok(n);
        }
        all_groups
            .iter()
            .find(|e| e.name == g)
            .map(|e| e.gid)
            .ok_or_else(|| {
                SpecError::Invalid(format!(
                    "unable to find group {g}: no matching entries in group file"
                ))
            })
    };
    let mut additional = Vec::new();
    match group_part {
        Some(g) if !g.is_empty() => gid = find_group(g)?,
        _ => {
            if let Some(name) = &name {
                for g in all_groups
                    .iter()
                    .filter(|g| g.members.iter().any(|m| m == name))
                {
                    if !additional.contains(&g.gid) {
                        additional.push(g.gid);
                    }
                }
            }
        }
    }
    for g in group_add {
        let id = find_group(g)?;
        if !additional.contains(&id) {
            additional.push(id);
        }
    }
    Ok(ExecUser {
        uid,
        gid,
        additional_gids: additional,
        home: if home.is_empty() { "/".into() } else { home },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "wharf-user-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/group"),
            "root:x:0:\nwww:x:33:\nbob:x:1000:\nwheel:x:10:bob,root\naudio:x:29:bob\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn docker_user_forms() {
        let r = rootfs();
        let u = resolve(&r, "", &[]).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids.clone(), u.home.as_str()),
            (0, 0, vec![10], "/root")
        );
        let u = resolve(&r, "bob", &[]).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids),
            (1000, 1000, vec![10, 29])
        );
        let u = resolve(&r, "1000", &[]).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        let u = resolve(&r, "bob:www", &[]).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1000, 33, vec![]));
        let u = resolve(&r, "4242:4343", &[]).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 4343, "/"));
        let u = resolve(&r, "4242", &["audio".into(), "7".into()]).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (4242, 0, vec![29, 7]));
        let e = resolve(&r, "nobody", &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "unable to find user nobody: no matching entries in passwd file"
        );
        let e = resolve(&r, "bob:nogroup", &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "unable to find group nogroup: no matching entries in group file"
        );
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let r = rootfs();
        std::fs::create_dir_all(r.join("real")).unwrap();
        std::os::unix::fs::symlink("/real", r.join("link")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("real/up")).unwrap();
        assert_eq!(resolve_in_root(&r, "/link/x"), r.join("real/x"));
        assert_eq!(resolve_in_root(&r, "/real/up/passwd"), r.join("etc/passwd"));
        assert_eq!(
            resolve_in_root(&r, "/../../etc/passwd"),
            r.join("etc/passwd")
        );
        std::fs::remove_dir_all(&r).unwrap();
    }
}
