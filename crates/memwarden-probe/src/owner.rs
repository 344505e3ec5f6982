//! What runs a process, read from its cgroup path: a container (Docker, Podman, containerd,
//! CRI-O), a Kubernetes pod, a systemd service or user session, or nothing but itself.

use crate::snapshot::WorkloadKind;

/// The owner a cgroup path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: WorkloadKind,
    /// `docker`, `podman`, `containerd`, `cri-o`, `kubernetes`, `systemd`.
    pub runtime: &'static str,
    /// The container id, the pod uid, or the unit name.
    pub id: String,
    /// The owner's own cgroup: the path up to and including the component that names it.
    pub cgroup_path: String,
}

/// Reads a cgroup path (v1 or v2 form, systemd or cgroupfs driver). `None`: a plain process.
pub fn classify(path: &str) -> Option<Owner> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let upto = |i: usize| format!("/{}", comps[..=i].join("/"));
    let owner = |kind, runtime, id: &str, i| Owner {
        kind,
        runtime,
        id: id.to_string(),
        cgroup_path: upto(i),
    };
    // A pod holds its containers: find it first.
    if comps.iter().any(|c| c.starts_with("kubepods")) {
        for (i, c) in comps.iter().enumerate() {
            if let Some(uid) = pod_uid(c) {
                return Some(owner(WorkloadKind::Pod, "kubernetes", &uid, i));
            }
        }
    }
    for (i, c) in comps.iter().enumerate() {
        let scoped = |prefix: &str| {
            c.strip_prefix(prefix)
                .map(|r| r.strip_suffix(".scope").unwrap_or(r))
                .filter(|id| is_container_id(id))
        };
        if c.contains("-conmon-") {
            // Podman's and CRI-O's monitor process, not the container itself.
            continue;
        }
        if let Some(id) = scoped("docker-") {
            return Some(owner(WorkloadKind::Container, "docker", id, i));
        }
        if *c == "docker"
            && let Some(id) = comps.get(i + 1).filter(|id| is_container_id(id))
        {
            return Some(owner(WorkloadKind::Container, "docker", id, i + 1));
        }
        if let Some(id) = scoped("libpod-") {
            return Some(owner(WorkloadKind::Container, "podman", id, i));
        }
        if let Some(id) = scoped("cri-containerd-").or_else(|| scoped("nerdctl-")) {
            return Some(owner(WorkloadKind::Container, "containerd", id, i));
        }
        if let Some(id) = scoped("crio-") {
            return Some(owner(WorkloadKind::Container, "cri-o", id, i));
        }
    }
    // The innermost unit: a service, or a user's login session.
    for (i, c) in comps.iter().enumerate().rev() {
        if c.ends_with(".service") || (c.starts_with("session-") && c.ends_with(".scope")) {
            return Some(owner(WorkloadKind::Service, "systemd", c, i));
        }
    }
    None
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(comp: &str) -> Option<String> {
    let raw = if let Some(rest) = comp.strip_prefix("pod") {
        rest
    } else if comp.starts_with("kubepods") {
        let slice = comp.strip_suffix(".slice")?;
        &slice[slice.rfind("-pod")? + 4..]
    } else {
        return None;
    };
    let uid = raw.replace('_', "-");
    (uid.len() >= 8 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')).then_some(uid)
}

fn is_container_id(s: &str) -> bool {
    s.len() >= 12 && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";

    fn c(path: &str) -> Option<(WorkloadKind, &'static str, String, String)> {
        classify(path).map(|o| (o.kind, o.runtime, o.id, o.cgroup_path))
    }

    #[test]
    fn docker_both_drivers() {
        let p = format!("/system.slice/docker-{ID}.scope");
        assert_eq!(
            c(&p),
            Some((WorkloadKind::Container, "docker", ID.into(), p.clone()))
        );
        let p = format!("/docker/{ID}");
        assert_eq!(
            c(&p),
            Some((WorkloadKind::Container, "docker", ID.into(), p.clone()))
        );
    }

    #[test]
    fn podman_rootful_rootless_and_conmon() {
        let p = format!("/machine.slice/libpod-{ID}.scope/container");
        let owner = classify(&p).unwrap();
        assert_eq!((owner.runtime, owner.id.as_str()), ("podman", ID));
        assert_eq!(
            owner.cgroup_path,
            format!("/machine.slice/libpod-{ID}.scope")
        );
        let rootless =
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope");
        assert_eq!(classify(&rootless).unwrap().runtime, "podman");
        let conmon = format!("/machine.slice/libpod-conmon-{ID}.scope");
        assert_eq!(classify(&conmon), None);
    }

    #[test]
    fn kubernetes_pods() {
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            uid.replace('-', "_")
        );
        let o = classify(&systemd).unwrap();
        assert_eq!(
            (o.kind, o.runtime, o.id.as_str()),
            (WorkloadKind::Pod, "kubernetes", uid)
        );
        assert!(o.cgroup_path.ends_with(".slice") && !o.cgroup_path.contains("cri-"));
        let cgroupfs = format!("/kubepods/besteffort/pod{uid}/{ID}");
        let o = classify(&cgroupfs).unwrap();
        assert_eq!(o.id, uid);
        assert_eq!(o.cgroup_path, format!("/kubepods/besteffort/pod{uid}"));
    }

    #[test]
    fn other_runtimes() {
        assert_eq!(
            classify(&format!("/system.slice/crio-{ID}.scope"))
                .unwrap()
                .runtime,
            "cri-o"
        );
        assert_eq!(
            classify(&format!("/system.slice/cri-containerd-{ID}.scope"))
                .unwrap()
                .runtime,
            "containerd"
        );
    }

    #[test]
    fn services_and_sessions() {
        assert_eq!(
            c("/system.slice/ollama.service"),
            Some((
                WorkloadKind::Service,
                "systemd",
                "ollama.service".into(),
                "/system.slice/ollama.service".into()
            ))
        );
        let user = "/user.slice/user-1000.slice/user@1000.service/app.slice/comfyui.service";
        assert_eq!(classify(user).unwrap().id, "comfyui.service");
        let session = "/user.slice/user-1000.slice/session-3.scope";
        assert_eq!(classify(session).unwrap().id, "session-3.scope");
    }

    #[test]
    fn plain_and_odd_paths() {
        for p in [
            "/",
            "",
            "/process_api/abc",
            "//",
            "/docker/",
            "/docker/xyz",
            "/kubepods/podZZ",
        ] {
            assert_eq!(classify(p), None, "{p}");
        }
    }
}
