#!/usr/bin/env python3
"""Writes an OCI image layout, packed as one tar, by hand: no registry, no base image, no daemon.

    oci-image.py --name docker.io/local/nmi:dev --out target/images/nmi.tar \
        --file target/debug/nmi:/usr/local/bin/nmi --strip /usr/local/bin/nmi \
        --elf-closure --entrypoint /usr/local/bin/nmi [--layer rootfs.tar] ...

What it writes (https://github.com/opencontainers/image-spec): `oci-layout`, `index.json` (its
manifest annotated with `io.containerd.image.name` and `org.opencontainers.image.ref.name`, which
`ctr images import`, `skopeo copy oci-archive:` and `crane push` read), the manifest, the config
(with `rootfs.diff_ids`) and the layers, uncompressed (`ctr` and the registries take them as they
are; a registry push compresses nothing, so the sizes in BENCHMARKS.md are what is transferred).

--elf-closure copies every shared library the image's ELF files need (as `ldd` resolves them on
this machine) to the path the loader looks for it at, so a dynamically linked program runs in an
image that has nothing else: the glibc that the build used comes with it. The tar is
reproducible: sorted entries, owner 0:0, mtime 0.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def fail(msg):
    print(f"[oci-image] FATAL: {msg}", file=sys.stderr)
    sys.exit(1)


class Rootfs:
    """The files of the generated layer: path in the image -> (kind, source or target, mode)."""

    def __init__(self):
        self.entries = {}

    def add_dirs(self, path):
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            self.entries.setdefault(d, ("dir", None, 0o755))

    def file(self, src, dest, mode=None):
        if not os.path.isfile(src):
            fail(f"{src} does not exist (build it first)")
        dest = dest.strip("/")
        self.add_dirs(dest)
        st = os.stat(src)
        self.entries[dest] = ("file", os.path.realpath(src), mode if mode is not None else st.st_mode & 0o7777)

    def symlink(self, dest, target):
        dest = dest.strip("/")
        self.add_dirs(dest)
        self.entries[dest] = ("symlink", target, 0o777)

    def dir(self, dest, mode=0o755):
        dest = dest.strip("/")
        self.add_dirs(dest + "/x")
        self.entries[dest] = ("dir", None, mode)

    def files(self):
        return [(d, e[1]) for d, e in self.entries.items() if e[0] == "file"]


def is_elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def ldd(path):
    """Shared libraries of an ELF file: (path the loader opens, real file). Static: none."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True)
    text = out.stdout + out.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if out.returncode != 0:
        fail(f"ldd {path}: {text.strip()}")
    libs = []
    for line in text.splitlines():
        line = line.strip()
        if "=> not found" in line:
            fail(f"{path} needs {line.split()[0]}, which is not installed here")
        if "=>" in line:
            target = line.split("=>")[1].split("(")[0].strip()
        else:
            target = line.split("(")[0].strip()
        if target.startswith("/"):
            libs.append((target, os.path.realpath(target)))
    return libs


def elf_closure(rootfs):
    seen = set()
    todo = [(dest, src) for dest, src in rootfs.files() if is_elf(src)]
    while todo:
        _, src = todo.pop()
        if src in seen:
            continue
        seen.add(src)
        for wanted, real in ldd(src):
            # The loader opens the path ldd printed (e.g. /lib64/ld-linux-x86-64.so.2): a regular
            # file there, whatever symlinks lead to it on this machine.
            if wanted.strip("/") not in rootfs.entries:
                rootfs.file(real, wanted, 0o755)
                todo.append((wanted, real))


def strip_elf(rootfs, dest, tmp):
    kind, src, mode = rootfs.entries[dest.strip("/")]
    out = os.path.join(tmp, hashlib.sha256(dest.encode()).hexdigest())
    subprocess.run(["strip", "-o", out, src], check=True)
    rootfs.entries[dest.strip("/")] = (kind, out, mode)


def write_layer(rootfs, out):
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.entries):
            kind, src, mode = rootfs.entries[path]
            info = tarfile.TarInfo(path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = mode
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = src
                tar.addfile(info)
            else:
                info.size = os.path.getsize(src)
                with open(src, "rb") as f:
                    tar.addfile(info, f)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="full image reference, e.g. docker.io/local/nmi:dev")
    p.add_argument("--out", required=True, help="the tarball to write")
    p.add_argument("--file", action="append", default=[], metavar="SRC:DEST", help="copy a file into the image")
    p.add_argument("--tree", action="append", default=[], metavar="SRC:DEST", help="copy a directory tree")
    p.add_argument("--symlink", action="append", default=[], metavar="DEST:TARGET")
    p.add_argument("--dir", action="append", default=[], metavar="DEST[:MODE]", help="an empty directory")
    p.add_argument("--text", action="append", default=[], metavar="DEST:CONTENT", help="a small text file")
    p.add_argument("--strip", action="append", default=[], metavar="DEST", help="strip this ELF file's symbols")
    p.add_argument("--elf-closure", action="store_true", help="add the shared libraries the ELF files need")
    p.add_argument("--layer", action="append", default=[], metavar="TAR", help="an existing layer tar, below the generated one")
    p.add_argument("--entrypoint", default=None, help="JSON list or a single path")
    p.add_argument("--cmd", default=None, help="JSON list")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--user", default=None)
    p.add_argument("--workdir", default=None)
    p.add_argument("--port", action="append", default=[], metavar="PORT/tcp")
    a = p.parse_args()

    rootfs = Rootfs()
    for spec in a.file:
        src, dest = spec.split(":", 1)
        rootfs.file(src, dest)
    for spec in a.tree:
        src, dest = spec.split(":", 1)
        if not os.path.isdir(src):
            fail(f"--tree {src} is not a directory")
        for root, dirs, files in os.walk(src):
            rel = os.path.relpath(root, src)
            base = dest if rel == "." else os.path.join(dest, rel)
            rootfs.dir(base)
            for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                full = os.path.join(root, name)
                if os.path.islink(full):
                    rootfs.symlink(os.path.join(base, name), os.readlink(full))
                elif "__pycache__" not in full:
                    rootfs.file(full, os.path.join(base, name))
    for spec in a.symlink:
        dest, target = spec.split(":", 1)
        rootfs.symlink(dest, target)
    for spec in a.dir:
        dest, _, mode = spec.partition(":")
        rootfs.dir(dest, int(mode, 8) if mode else 0o755)

    with tempfile.TemporaryDirectory(prefix="oci-image-") as tmp:
        for i, spec in enumerate(a.text):
            dest, content = spec.split(":", 1)
            path = os.path.join(tmp, f"text-{i}")
            with open(path, "w") as f:
                f.write(content.replace("\\n", "\n"))
            rootfs.file(path, dest, 0o644)
        for dest in a.strip:
            if dest.strip("/") not in rootfs.entries:
                fail(f"--strip {dest}: no such file in the image")
            strip_elf(rootfs, dest, tmp)
        if a.elf_closure:
            elf_closure(rootfs)

        layout = os.path.join(tmp, "layout")
        blobs = os.path.join(layout, "blobs", "sha256")
        os.makedirs(blobs)

        def blob_from_file(path, media_type):
            digest = sha256_file(path)
            shutil.copyfile(path, os.path.join(blobs, digest))
            return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": os.path.getsize(path)}

        def blob_from_bytes(data, media_type):
            digest = hashlib.sha256(data).hexdigest()
            with open(os.path.join(blobs, digest), "wb") as f:
                f.write(data)
            return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

        layers = []
        for tar in a.layer:
            if not os.path.isfile(tar):
                fail(f"--layer {tar} does not exist")
            layers.append(blob_from_file(tar, OCI_LAYER))
        if rootfs.entries:
            generated = os.path.join(tmp, "layer.tar")
            write_layer(rootfs, generated)
            layers.append(blob_from_file(generated, OCI_LAYER))
        if not layers:
            fail("the image would have no files")

        config = {"Env": ["PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env}
        if a.entrypoint:
            config["Entrypoint"] = json.loads(a.entrypoint) if a.entrypoint.startswith("[") else [a.entrypoint]
        if a.cmd:
            config["Cmd"] = json.loads(a.cmd)
        if a.user:
            config["User"] = a.user
        if a.workdir:
            config["WorkingDir"] = a.workdir
        if a.port:
            config["ExposedPorts"] = {port: {} for port in a.port}
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            # Uncompressed layers: each layer's diff_id is its own digest.
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
            "history": [{"created_by": "scripts/oci-image.py"}],
        }
        cfg = blob_from_bytes(json.dumps(image_config, sort_keys=True).encode(), OCI_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": layers}
        man = blob_from_bytes(json.dumps(manifest, sort_keys=True).encode(), OCI_MANIFEST)
        tag = a.name.rsplit(":", 1)[1] if ":" in a.name.rsplit("/", 1)[-1] else "latest"
        man["annotations"] = {"io.containerd.image.name": a.name, "org.opencontainers.image.ref.name": tag}
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [man]}
        with open(os.path.join(layout, "index.json"), "w") as f:
            json.dump(index, f, sort_keys=True)
        with open(os.path.join(layout, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        partial = a.out + ".partial"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for root, dirs, files in os.walk(layout):
                dirs.sort()
                for name in sorted(files):
                    full = os.path.join(root, name)
                    info = tar.gettarinfo(full, os.path.relpath(full, layout))
                    info.mtime = 0
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
        os.replace(partial, a.out)
    print(f"{a.name} {a.out} {os.path.getsize(a.out)}")


if __name__ == "__main__":
    main()
