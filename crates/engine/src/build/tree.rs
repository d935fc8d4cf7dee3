//! The file trees a build reads: the context (with `.dockerignore`, where a path leaving the
//! root is an error) and the layered file system of a stage or image (read through a
//! read-only overlay mount, where absolute symlinks mean the image's root).

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use super::BuildError;
use super::ignore::Ignore;

/// A directory tree sources are read from.
pub struct Tree {
    pub root: PathBuf,
    pub ignore: Ignore,
    /// The build context: leaving the root is refused rather than clamped.
    pub strict: bool,
    /// Unmounted and removed when the tree is dropped.
    mount: Option<PathBuf>,
}

impl Drop for Tree {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            let _ = crate::snapshot::unmount(&m);
            let _ = std::fs::remove_dir(&m);
        }
    }
}

pub fn has_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// Splits a relative or absolute path into clean components; `..` above the start is an
/// error (None).
pub fn components(p: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s.to_string()),
        }
    }
    Some(out)
}

impl Tree {
    pub fn context(root: &Path) -> Result<Tree, BuildError> {
        let ignore = match std::fs::read_to_string(root.join(".dockerignore")) {
            Ok(t) => Ignore::parse(&t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ignore::default(),
            Err(e) => {
                return Err(BuildError::Context(format!("reading .dockerignore: {e}")));
            }
        };
        Ok(Tree {
            root: root.to_path_buf(),
            ignore,
            strict: true,
            mount: None,
        })
    }

    /// The merged view of `lowers` (top first) mounted read-only under `scratch`.
    pub fn layers(lowers: &[PathBuf], scratch: &Path) -> Result<Tree, BuildError> {
        let (root, mount) = match lowers {
            [] => {
                let d = scratch.join(format!("empty-{}", crate::content::random_name()));
                std::fs::create_dir_all(&d)
                    .map_err(|e| BuildError::io("making an empty root", e))?;
                (d.clone(), Some(d))
            }
            [one] => (one.clone(), None),
            many => {
                let d = scratch.join(format!("view-{}", crate::content::random_name()));
                std::fs::create_dir_all(&d)
                    .map_err(|e| BuildError::io("making a mount point", e))?;
                if let Err(e) = mount_ro(many, &d) {
                    let _ = std::fs::remove_dir(&d);
                    return Err(BuildError::io("mounting a stage's file system", e));
                }
                (d.clone(), Some(d))
            }
        };
        Ok(Tree {
            root,
            ignore: Ignore::default(),
            strict: false,
            mount,
        })
    }

    /// Follows `rel` from the root, resolving symlinks inside the tree. Returns the real
    /// path and its relative form; in the context a link out of the root is an error.
    pub fn resolve(&self, rel: &str, follow_last: bool) -> Result<(PathBuf, String), String> {
        let Some(mut todo) = components(rel) else {
            return Err(format!("forbidden path outside the build context: {rel}"));
        };
        todo.reverse();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            let candidate = self.root.join(done.join("/")).join(&c);
            let is_last = todo.is_empty();
            match std::fs::symlink_metadata(&candidate) {
                Ok(m) if m.file_type().is_symlink() && (!is_last || follow_last) => {
                    hops += 1;
                    if hops > 40 {
                        return Err(format!("too many levels of symbolic links: {rel}"));
                    }
                    let target = std::fs::read_link(&candidate)
                        .map_err(|e| format!("reading link {rel}: {e}"))?;
                    let t = target.to_string_lossy().to_string();
                    let mut base = if t.starts_with('/') {
                        if self.strict {
                            return Err(format!(
                                "forbidden path outside the build context: {rel} is a link to {t}"
                            ));
                        }
                        Vec::new()
                    } else {
                        done.clone()
                    };
                    for seg in t.split('/') {
                        match seg {
                            "" | "." => {}
                            ".." => {
                                if base.pop().is_none() && self.strict {
                                    return Err(format!(
                                        "forbidden path outside the build context: {rel} is a link to {t}"
                                    ));
                                }
                            }
                            s => base.push(s.to_string()),
                        }
                    }
                    done = Vec::new();
                    let mut rest: Vec<String> = base;
                    rest.reverse();
                    todo.extend(rest);
                }
                _ => done.push(c),
            }
        }
        let rel = done.join("/");
        Ok((self.root.join(&rel), rel))
    }

    pub fn excluded(&self, rel: &str) -> bool {
        self.strict && self.ignore.excluded(rel)
    }

    /// The relative paths matching the glob `pattern` (segments matched with Go's rules).
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        let Some(segs) = components(pattern) else {
            return Err(format!(
                "forbidden path outside the build context: {pattern}"
            ));
        };
        let mut found = vec![String::new()];
        for seg in &segs {
            let mut next = Vec::new();
            for base in &found {
                if !has_glob(seg) {
                    let p = if base.is_empty() {
                        seg.clone()
                    } else {
                        format!("{base}/{seg}")
                    };
                    if std::fs::symlink_metadata(self.root.join(&p)).is_ok() {
                        next.push(p);
                    }
                    continue;
                }
                let Ok((dir, _)) = self.resolve(base, true) else {
                    continue;
                };
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| super::ignore::go_match(seg, n))
                    .collect();
                names.sort();
                for n in names {
                    next.push(if base.is_empty() {
                        n
                    } else {
                        format!("{base}/{n}")
                    });
                }
            }
            found = next;
        }
        found.retain(|p| !p.is_empty() && !self.excluded(p));
        Ok(found)
    }
}

/// Mounts a read-only overlay of `lowers` (top first, at least two) on `target`.
fn mount_ro(lowers: &[PathBuf], target: &Path) -> io::Result<()> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
        fsconfig_set_string, fsmount, fsopen, move_mount,
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_set_string(&fs, "source", "overlay")?;
    for lower in lowers {
        fsconfig_set_string(&fs, "lowerdir+", lower.as_path())?;
    }
    fsconfig_create(&fs)?;
    let mnt = fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY,
    )?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Looks a path up in layer directories (top first) the way overlay would, following
/// symlinks inside the image: its metadata when it exists.
pub fn lookup(lowers: &[PathBuf], rel: &str) -> Option<(PathBuf, std::fs::Metadata)> {
    let mut todo = components(rel)?;
    todo.reverse();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        let p = format!(
            "{}{}",
            if done.is_empty() {
                String::new()
            } else {
                format!("{}/", done.join("/"))
            },
            c
        );
        let (path, meta) = find(lowers, &p)?;
        if meta.file_type().is_symlink() && !todo.is_empty() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let t = std::fs::read_link(&path)
                .ok()?
                .to_string_lossy()
                .to_string();
            let mut base = if t.starts_with('/') {
                Vec::new()
            } else {
                done.clone()
            };
            for seg in t.split('/') {
                match seg {
                    "" | "." => {}
                    ".." => {
                        base.pop();
                    }
                    s => base.push(s.to_string()),
                }
            }
            base.reverse();
            done = Vec::new();
            todo.extend(base);
            continue;
        }
        done.push(c);
    }
    find(lowers, &done.join("/"))
}

/// The topmost layer entry for an exact path (no symlinks followed), honouring whiteouts.
fn find(lowers: &[PathBuf], rel: &str) -> Option<(PathBuf, std::fs::Metadata)> {
    if rel.is_empty() {
        let p = lowers.first()?.clone();
        let m = std::fs::metadata(&p).ok()?;
        return Some((p, m));
    }
    for l in lowers {
        let p = l.join(rel);
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            use std::os::unix::fs::FileTypeExt;
            if m.file_type().is_char_device() && m.rdev() == 0 {
                return None;
            }
            return Some((p, m));
        }
    }
    None
}

/// The directory the symlink-resolved form of `rel` names in the image, for writing into:
/// `bin/x` in an image whose `/bin` links to `usr/bin` becomes `usr/bin/x`.
pub fn resolve_dest(lowers: &[PathBuf], rel: &str) -> String {
    let Some(segs) = components(rel) else {
        return rel.to_string();
    };
    let mut done: Vec<String> = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let p = if done.is_empty() {
            seg.clone()
        } else {
            format!("{}/{seg}", done.join("/"))
        };
        if i + 1 < segs.len()
            && let Some((path, meta)) = find(lowers, &p)
            && meta.file_type().is_symlink()
            && let Ok(t) = std::fs::read_link(&path)
        {
            let t = t.to_string_lossy().to_string();
            let mut base = if t.starts_with('/') {
                Vec::new()
            } else {
                done.clone()
            };
            for s in t.split('/') {
                match s {
                    "" | "." => {}
                    ".." => {
                        base.pop();
                    }
                    s => base.push(s.to_string()),
                }
            }
            done = components(&resolve_dest(lowers, &base.join("/"))).unwrap_or(base);
            continue;
        }
        done.push(seg.clone());
    }
    done.join("/")
}

/// Content hashes of context files, remembered by (device, inode, size, mtime, ctime) so
/// an unchanged file is not read again; persisted across builds.
#[derive(Default)]
pub struct HashCache {
    path: Option<PathBuf>,
    map: Mutex<HashMap<String, (String, String)>>,
    dirty: Mutex<bool>,
}

impl HashCache {
    pub fn load(path: &Path) -> HashCache {
        let mut map = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                if let Some((stat, rest)) = line.split_once('\t')
                    && let Some((hash, file)) = rest.split_once('\t')
                {
                    map.insert(file.to_string(), (stat.to_string(), hash.to_string()));
                }
            }
        }
        HashCache {
            path: Some(path.to_path_buf()),
            map: Mutex::new(map),
            dirty: Mutex::new(false),
        }
    }

    /// sha256 hex of the file at `path`.
    pub fn file(&self, path: &Path, meta: &std::fs::Metadata) -> io::Result<String> {
        let stat = format!(
            "{} {} {} {}.{} {}.{}",
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        );
        let key = path.to_string_lossy().to_string();
        if let Some((s, h)) = self.lock().get(&key)
            && *s == stat
        {
            return Ok(h.clone());
        }
        let mut f = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let h = hex::encode(hasher.finalize());
        self.lock().insert(key, (stat, h.clone()));
        *self.dirty.lock().unwrap_or_else(|e| e.into_inner()) = true;
        Ok(h)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, String)>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the cache back when it changed (entries for files that are gone dropped).
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        {
            // Cleared here, or every later build of the daemon's life rewrites the whole
            // file (a stat per entry) though nothing changed.
            let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            if !*dirty {
                return;
            }
            *dirty = false;
        }
        let mut text = String::new();
        for (file, (stat, hash)) in self.lock().iter() {
            if file.contains('\n') || file.contains('\t') || !Path::new(file).exists() {
                continue;
            }
            text.push_str(&format!("{stat}\t{hash}\t{file}\n"));
        }
        let tmp = path.with_extension(format!("tmp-{}", crate::content::random_name()));
        if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_refuses_links_and_dots_out() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(ctx.join("sub")).unwrap();
        std::fs::write(ctx.join("sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("../../outside", ctx.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ctx.join("abs")).unwrap();
        std::os::unix::fs::symlink("sub/f", ctx.join("ok")).unwrap();
        let t = Tree::context(&ctx).unwrap();
        assert!(
            t.resolve("../x", true)
                .unwrap_err()
                .contains("outside the build context")
        );
        assert!(t.resolve("sub/up", true).unwrap_err().contains("outside"));
        assert!(t.resolve("abs", true).unwrap_err().contains("outside"));
        assert_eq!(t.resolve("ok", true).unwrap().1, "sub/f");
        assert_eq!(t.resolve("sub/../ok", true).unwrap().1, "sub/f");
        assert_eq!(t.resolve("ok", false).unwrap().1, "ok");
        assert_eq!(t.glob("s*/?").unwrap(), vec!["sub/f"]);
    }

    #[test]
    fn layer_lookup_honours_whiteouts_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let (top, bottom) = (dir.path().join("top"), dir.path().join("bottom"));
        std::fs::create_dir_all(bottom.join("usr/bin")).unwrap();
        std::fs::write(bottom.join("usr/bin/x"), "x").unwrap();
        std::fs::write(bottom.join("gone"), "x").unwrap();
        std::os::unix::fs::symlink("usr/bin", bottom.join("bin")).unwrap();
        std::fs::create_dir_all(&top).unwrap();
        nix::sys::stat::mknod(
            &top.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let lowers = vec![top, bottom];
        assert!(lookup(&lowers, "gone").is_none());
        assert!(lookup(&lowers, "bin/x").is_some());
        assert_eq!(resolve_dest(&lowers, "bin/y"), "usr/bin/y");
        assert_eq!(resolve_dest(&lowers, "opt/y"), "opt/y");
    }
}
