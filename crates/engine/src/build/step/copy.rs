//! COPY and ADD: sources from the context (never outside it), another stage or an image;
//! `--chown`, `--chmod`, globs, Docker's directory rules, local tar extraction for ADD and
//! remote files for ADD.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::super::layer::{Item, ItemKind};
use super::super::parse::Source;
use super::super::tree::{self, HashCache, Tree, components, has_glob, lookup, resolve_dest};
use super::super::{BuildError, Builder, State, key_of};
use super::{StageCtx, step_err};

/// `user[:group]` as numbers, names looked up in the image's /etc/passwd and /etc/group.
pub(crate) fn resolve_owner(lowers: &[PathBuf], spec: &str) -> Result<(u64, u64), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |file: &str| -> String {
        lookup(lowers, file)
            .and_then(|(p, _)| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let (uid, primary) = match user.parse::<u64>() {
        Ok(n) => (n, None),
        Err(_) => {
            let passwd = read("etc/passwd");
            let row = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[0] == user)
                .ok_or_else(|| {
                    format!("unable to find user {user}: no matching entries in passwd file")
                })?;
            let uid = row[2]
                .parse()
                .map_err(|_| format!("bad uid for {user} in /etc/passwd"))?;
            let gid = row[3]
                .parse()
                .map_err(|_| format!("bad gid for {user} in /etc/passwd"))?;
            (uid, Some(gid))
        }
    };
    let gid = match group {
        None => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                let groups = read("etc/group");
                let row = groups
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() > 2 && f[0] == g)
                    .ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?;
                row[2]
                    .parse()
                    .map_err(|_| format!("bad gid for {g} in /etc/group"))?
            }
        },
    };
    Ok((uid, gid))
}

/// A digest of everything under `path` (names, modes, link targets, contents), for keys
/// over bind mounts. `ctx` gives the context and the path's relative name, to honour
/// `.dockerignore`.
pub(crate) fn tree_digest(
    hashes: &HashCache,
    path: &Path,
    ctx: Option<(&Tree, &str)>,
) -> io::Result<String> {
    let mut h = Sha256::new();
    let root = std::fs::symlink_metadata(path)?;
    let mut stack = vec![(path.to_path_buf(), ctx.map(|(_, r)| r.to_string()), root)];
    while let Some((p, rel, meta)) = stack.pop() {
        h.update(
            format!(
                "{}\0{:o}\0",
                p.strip_prefix(path).unwrap_or(&p).display(),
                meta.mode()
            )
            .as_bytes(),
        );
        if meta.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&p)?.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries.into_iter().rev() {
                let n = e.file_name();
                let child_rel = rel.as_ref().map(|r| {
                    if r.is_empty() {
                        n.to_string_lossy().to_string()
                    } else {
                        format!("{r}/{}", n.to_string_lossy())
                    }
                });
                if let (Some((t, _)), Some(r)) = (ctx, &child_rel)
                    && t.excluded(r)
                {
                    continue;
                }
                // Relative to the open directory (no walk of the full path per file): on a
                // 54k-file context this is most of a no-change rebuild.
                let m = e.metadata()?;
                stack.push((p.join(&n), child_rel, m));
            }
        } else if meta.file_type().is_symlink() {
            h.update(std::fs::read_link(&p)?.as_os_str().as_encoded_bytes());
        } else if meta.is_file() {
            h.update(hashes.file(&p, &meta)?.as_bytes());
        }
    }
    Ok(hex::encode(h.finalize()))
}

struct Flags {
    from: Option<String>,
    chown: Option<String>,
    chmod: Option<u32>,
}

fn parse_flags(
    ctx: &StageCtx<'_>,
    st: &State,
    line: usize,
    add: bool,
    flags: &[(String, Option<String>)],
) -> Result<Flags, BuildError> {
    let what = if add { "ADD" } else { "COPY" };
    let mut f = Flags {
        from: None,
        chown: None,
        chmod: None,
    };
    for (k, v) in flags {
        let v = v.clone().unwrap_or_default();
        match k.as_str() {
            "from" if !add => f.from = Some(ctx.word(st, line, &v)?),
            "chown" => f.chown = Some(ctx.word(st, line, &v)?),
            "chmod" => {
                let v = ctx.word(st, line, &v)?;
                let m = u32::from_str_radix(&v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| {
                        step_err(
                            line,
                            format!("{what} --chmod: invalid mode {v:?} (octal expected)"),
                        )
                    })?;
                f.chmod = Some(m);
            }
            // Layer linking is an optimisation BuildKit may skip too: accepted, no effect.
            "link" => {}
            "checksum" | "keep-git-dir" | "unpack" if add => {}
            other => {
                return Err(step_err(line, format!("{what}: unknown flag --{other}")));
            }
        }
    }
    Ok(f)
}

/// Whether the file starts like a tar (plain, gzip or zstd).
fn archive_kind(path: &Path) -> Option<u8> {
    let mut head = [0u8; 512];
    let mut f = std::fs::File::open(path).ok()?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    if head[..n].starts_with(&[0x1f, 0x8b]) {
        Some(1)
    } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(2)
    } else if n >= 262 && &head[257..262] == b"ustar" {
        Some(0)
    } else {
        None
    }
}

fn join_rel(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else if name.is_empty() {
        base.to_string()
    } else {
        format!("{base}/{name}")
    }
}

struct Collect<'a> {
    hashes: &'a HashCache,
    items: Vec<Item>,
    owner: Option<(u64, u64)>,
    /// Sources from the context belong to root; from a stage they keep their owner.
    keep_owner: bool,
    chmod: Option<u32>,
    digest: Sha256,
}

impl Collect<'_> {
    fn owner_of(&self, meta: &std::fs::Metadata) -> (u64, u64) {
        self.owner.unwrap_or(if self.keep_owner {
            (meta.uid().into(), meta.gid().into())
        } else {
            (0, 0)
        })
    }

    fn push(&mut self, item: Item, content: &str) {
        self.digest.update(
            format!(
                "{}\0{}\0{:o}\0{}\0{}\0{}\n",
                item.path,
                match &item.kind {
                    ItemKind::Dir => "d",
                    ItemKind::File(_) | ItemKind::Bytes(_) => "f",
                    ItemKind::Symlink(_) => "l",
                },
                item.mode,
                item.uid,
                item.gid,
                content
            )
            .as_bytes(),
        );
        self.items.push(item);
    }

    /// One file system object at `src` becomes `dest` (a directory's contents go under it).
    fn add(
        &mut self,
        tree: &Tree,
        src: &Path,
        src_rel: &str,
        meta: &std::fs::Metadata,
        dest: &str,
    ) -> io::Result<()> {
        let (uid, gid) = self.owner_of(meta);
        let ft = meta.file_type();
        if ft.is_dir() {
            if !dest.is_empty() {
                let mode = self.chmod.unwrap_or(meta.mode() & 0o7777);
                self.push(
                    Item {
                        path: dest.to_string(),
                        kind: ItemKind::Dir,
                        mode,
                        uid,
                        gid,
                        mtime: meta.mtime(),
                    },
                    "",
                );
            }
            let mut names: Vec<String> = std::fs::read_dir(src)?
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect();
            names.sort();
            for n in names {
                let child_rel = join_rel(src_rel, &n);
                if tree.excluded(&child_rel) {
                    continue;
                }
                let child = src.join(&n);
                let m = std::fs::symlink_metadata(&child)?;
                self.add(tree, &child, &child_rel, &m, &join_rel(dest, &n))?;
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(src)?.to_string_lossy().to_string();
            self.push(
                Item {
                    path: dest.to_string(),
                    kind: ItemKind::Symlink(target.clone()),
                    mode: 0o777,
                    uid,
                    gid,
                    mtime: meta.mtime(),
                },
                &target,
            );
        } else if ft.is_file() {
            let h = self.hashes.file(src, meta)?;
            let mode = self.chmod.unwrap_or(meta.mode() & 0o7777);
            self.push(
                Item {
                    path: dest.to_string(),
                    kind: ItemKind::File(src.to_path_buf()),
                    mode,
                    uid,
                    gid,
                    mtime: meta.mtime(),
                },
                &h,
            );
        }
        Ok(())
    }

    /// ADD of a local archive: its entries under `dest`.
    fn extract(&mut self, archive: &Path, kind: u8, dest: &str) -> Result<(), String> {
        let f = std::fs::File::open(archive).map_err(|e| e.to_string())?;
        let reader: Box<dyn Read> = match kind {
            1 => Box::new(flate2::read::MultiGzDecoder::new(f)),
            2 => Box::new(zstd::stream::read::Decoder::new(f).map_err(|e| e.to_string())?),
            _ => Box::new(f),
        };
        let mut ar = tar::Archive::new(reader);
        let mut seen: HashMap<String, Vec<u8>> = HashMap::new();
        for e in ar.entries().map_err(|e| e.to_string())? {
            let mut e = e.map_err(|e| e.to_string())?;
            let raw = String::from_utf8_lossy(&e.path_bytes()).to_string();
            let Some(comps) = components(raw.trim_start_matches('/')) else {
                return Err(format!("archive entry {raw:?} leaves its root"));
            };
            let rel = comps.join("/");
            if rel.is_empty() {
                continue;
            }
            let h = e.header();
            let mode = self.chmod.unwrap_or(h.mode().unwrap_or(0o644) & 0o7777);
            let (uid, gid) = self
                .owner
                .unwrap_or((h.uid().unwrap_or(0), h.gid().unwrap_or(0)));
            let mtime = h.mtime().unwrap_or(0) as i64;
            let path = join_rel(dest, &rel);
            let kind = match h.entry_type() {
                tar::EntryType::Directory => ItemKind::Dir,
                tar::EntryType::Symlink => ItemKind::Symlink(
                    e.link_name()
                        .map_err(|e| e.to_string())?
                        .map(|l| l.to_string_lossy().to_string())
                        .unwrap_or_default(),
                ),
                tar::EntryType::Link => {
                    let target = e
                        .link_name()
                        .map_err(|e| e.to_string())?
                        .map(|l| l.to_string_lossy().to_string())
                        .unwrap_or_default();
                    let t = components(target.trim_start_matches('/'))
                        .unwrap_or_default()
                        .join("/");
                    ItemKind::Bytes(seen.get(&t).cloned().unwrap_or_default())
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut b = Vec::new();
                    e.read_to_end(&mut b).map_err(|e| e.to_string())?;
                    seen.insert(rel.clone(), b.clone());
                    ItemKind::Bytes(b)
                }
                _ => continue,
            };
            let content = match &kind {
                ItemKind::Bytes(b) => crate::content::Digest::of(b).to_string(),
                ItemKind::Symlink(t) => t.clone(),
                _ => String::new(),
            };
            self.push(
                Item {
                    path,
                    kind,
                    mode,
                    uid,
                    gid,
                    mtime,
                },
                &content,
            );
        }
        Ok(())
    }
}

/// Fetches a URL for ADD into `file`; returns its Last-Modified time when it has one.
fn download(url: &str, file: &Path) -> Result<Option<i64>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client.get(url).send().await.map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            msg
        })?;
        if !resp.status().is_success() {
            return Err(format!("server answered {}", resp.status()));
        }
        let modified = resp
            .headers()
            .get("last-modified")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .map(|t| t.timestamp());
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        std::fs::write(file, &body).map_err(|e| e.to_string())?;
        Ok(modified)
    })
}

impl Builder {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy(
        &self,
        ctx: &mut StageCtx<'_>,
        st: State,
        line: usize,
        add: bool,
        flags: &[(String, Option<String>)],
        srcs: &[Source],
        dest: &str,
        text: &str,
    ) -> Result<(State, bool), BuildError> {
        let what = if add { "ADD" } else { "COPY" };
        let f = parse_flags(ctx, &st, line, add, flags)?;
        let lowers = self.images.layer_dirs(&st.layers)?;
        let owner = match &f.chown {
            Some(c) => Some(resolve_owner(&lowers, c).map_err(|m| step_err(line, m))?),
            None => None,
        };
        let dest_raw = ctx.word(&st, line, dest)?;
        let workdir = st
            .doc
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .unwrap_or_else(|| "/".into());
        let dest_abs = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{workdir}/{dest_raw}")
        };
        let mut dest_is_dir = dest_raw.ends_with('/')
            || dest_raw == "."
            || dest_raw.ends_with("/.")
            || dest_raw.is_empty();
        let dest_rel = resolve_dest(
            &lowers,
            &components(&dest_abs).unwrap_or_default().join("/"),
        );
        if dest_rel.is_empty() {
            dest_is_dir = true;
        }
        if let Some((_, m)) = lookup(&lowers, &dest_rel)
            && m.is_dir()
        {
            dest_is_dir = true;
        }
        let too_many = || {
            step_err(
                line,
                format!(
                    "When using {what} with more than one source file, the destination must be a directory and end with a /"
                ),
            )
        };
        if srcs.len() > 1 && !dest_is_dir {
            return Err(too_many());
        }
        let view;
        let source_tree: &Tree = match &f.from {
            Some(from) => {
                view = self.view_of(ctx, line, from)?;
                &view
            }
            None => ctx.context,
        };
        let scratch = super::super::ScratchDir::new(ctx.scratch, "add")?;
        // (real path, relative name in its tree, ADD from URL)
        let mut matches: Vec<(PathBuf, String, bool)> = Vec::new();
        let mut heredocs: Vec<(Vec<u8>, String)> = Vec::new();
        let mut url_times: HashMap<PathBuf, i64> = HashMap::new();
        for src in srcs {
            match src {
                Source::HereDoc { content, expand } => {
                    let body = if *expand {
                        let esc = ctx.lex.escape;
                        let mut quoted = String::new();
                        for c in content.chars() {
                            if c == '"' || c == '\'' || c == esc {
                                quoted.push(esc);
                            }
                            quoted.push(c);
                        }
                        ctx.word(&st, line, &quoted)?
                    } else {
                        content.clone()
                    };
                    heredocs.push((body.into_bytes(), String::new()));
                }
                Source::Path(p) => {
                    let p = ctx.word(&st, line, p)?;
                    if p.starts_with("http://") || p.starts_with("https://") {
                        if !add {
                            return Err(step_err(
                                line,
                                format!("COPY can not fetch a URL ({p}): use ADD"),
                            ));
                        }
                        let name = p
                            .split('?')
                            .next()
                            .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
                            .filter(|n| !n.is_empty() && !n.contains(':'))
                            .unwrap_or("download")
                            .to_string();
                        let file = scratch.path().join(&name);
                        let modified = download(&p, &file)
                            .map_err(|e| step_err(line, format!("ADD {p}: {e}")))?;
                        url_times.insert(file.clone(), modified.unwrap_or(0));
                        matches.push((file, name, true));
                        continue;
                    }
                    if tree::components(&p).is_none() {
                        return Err(step_err(
                            line,
                            format!("{what} {p}: forbidden path outside the build context"),
                        ));
                    }
                    let found = if has_glob(&p) {
                        let g = source_tree
                            .glob(&p)
                            .map_err(|m| step_err(line, format!("{what} {p}: {m}")))?;
                        if g.is_empty() {
                            return Err(step_err(
                                line,
                                format!("{what} {p}: no source files were specified"),
                            ));
                        }
                        g
                    } else {
                        vec![p.clone()]
                    };
                    for m in found {
                        let (real, rel) = source_tree
                            .resolve(&m, true)
                            .map_err(|msg| step_err(line, format!("{what} {m}: {msg}")))?;
                        if source_tree.excluded(&rel) || std::fs::symlink_metadata(&real).is_err() {
                            return Err(step_err(
                                line,
                                format!("{what} {m}: \"/{rel}\" not found"),
                            ));
                        }
                        matches.push((real, rel, false));
                    }
                }
            }
        }
        if matches.len() + heredocs.len() > 1 && !dest_is_dir {
            return Err(too_many());
        }
        let mut c = Collect {
            hashes: &self.hashes,
            items: Vec::new(),
            owner,
            keep_owner: f.from.is_some(),
            chmod: f.chmod,
            digest: Sha256::new(),
        };
        for (body, _) in &heredocs {
            let path = if dest_is_dir {
                join_rel(&dest_rel, "heredoc")
            } else {
                dest_rel.clone()
            };
            let (uid, gid) = owner.unwrap_or((0, 0));
            let digest = crate::content::Digest::of(body).to_string();
            c.push(
                Item {
                    path,
                    kind: ItemKind::Bytes(body.clone()),
                    mode: f.chmod.unwrap_or(0o644),
                    uid,
                    gid,
                    mtime: 0,
                },
                &digest,
            );
        }
        for (real, rel, from_url) in &matches {
            let meta = std::fs::symlink_metadata(real)
                .map_err(|e| step_err(line, format!("{what} {rel}: {e}")))?;
            let base = rel.rsplit('/').next().unwrap_or(rel).to_string();
            if meta.is_dir() {
                c.add(source_tree, real, rel, &meta, &dest_rel)
                    .map_err(|e| step_err(line, format!("{what} {rel}: {e}")))?;
                continue;
            }
            if add
                && !from_url
                && let Some(kind) = archive_kind(real)
            {
                c.extract(real, kind, &dest_rel)
                    .map_err(|m| step_err(line, format!("ADD {rel}: {m}")))?;
                continue;
            }
            let target = if dest_is_dir {
                join_rel(&dest_rel, &base)
            } else {
                dest_rel.clone()
            };
            if *from_url {
                let h = self
                    .hashes
                    .file(real, &meta)
                    .map_err(|e| step_err(line, format!("ADD {rel}: {e}")))?;
                let (uid, gid) = owner.unwrap_or((0, 0));
                c.push(
                    Item {
                        path: target,
                        kind: ItemKind::File(real.clone()),
                        mode: f.chmod.unwrap_or(0o600),
                        uid,
                        gid,
                        mtime: url_times.get(real).copied().unwrap_or(0),
                    },
                    &h,
                );
                continue;
            }
            c.add(source_tree, real, rel, &meta, &target)
                .map_err(|e| step_err(line, format!("{what} {rel}: {e}")))?;
        }
        // Directories above the destination that the image lacks are made here.
        let now = chrono::Utc::now().timestamp();
        let comps = components(&dest_rel).unwrap_or_default();
        let upto = if dest_is_dir {
            comps.len()
        } else {
            comps.len().saturating_sub(1)
        };
        for n in 1..=upto {
            let p = comps[..n].join("/");
            if lookup(&lowers, &p).is_some() || c.items.iter().any(|i| i.path == p) {
                continue;
            }
            let (uid, gid) = owner.unwrap_or((0, 0));
            c.push(
                Item {
                    path: p,
                    kind: ItemKind::Dir,
                    mode: 0o755,
                    uid,
                    gid,
                    mtime: now,
                },
                "",
            );
        }
        let inputs = hex::encode(std::mem::take(&mut c.digest).finalize());
        let desc = format!(
            "{what} {} {} {}",
            f.chown.clone().unwrap_or_default(),
            f.chmod.map(|m| format!("{m:o}")).unwrap_or_default(),
            dest_rel
        );
        let key = key_of(&[
            &ctx.key,
            &desc,
            &inputs,
            &super::epoch_str(ctx.opts.source_date_epoch),
        ]);
        if !ctx.opts.no_cache
            && let Some(hit) = self.cache_get(&key)
        {
            ctx.key = key;
            return Ok((hit, true));
        }
        let mut items = c.items;
        let epoch = ctx.opts.source_date_epoch;
        let created_by = format!("{text} # buildkit");
        let next = self.with_layer(ctx, &st, None, created_by, move |w| {
            super::super::layer::write_items(&mut items, epoch, w).map(|_| ())
        })?;
        drop(scratch);
        self.cache_put(&key, &next);
        ctx.key = key;
        Ok((next, false))
    }
}
