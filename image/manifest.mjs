// Writes manifest.json and LICENSES.md for the image in OUT (called by build.sh).
// argv: OUT WORK v86Version agentProtocol memoryMB cmdline
// WORK holds rootfs.rows / kernel.rows / bios.rows / bash-source.rows / jq-source.rows:
// "package version arch sha256 source sourceVersion" (for *-source, sha256 is the .dsc's).
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { brotliDecompressSync } from "node:zlib";

const [out, work, v86, agentProtocol, memoryMB, cmdline] = process.argv.slice(2);

const rows = (name) =>
  readFileSync(join(work, name), "utf8").split("\n").filter(Boolean).map((l) => {
    const [pkg, version, arch, debSha256, source, sourceVersion] = l.split(" ");
    return { package: pkg, version, arch, debSha256, source, sourceVersion };
  });
const rootfs = rows("rootfs.rows"), kernel = rows("kernel.rows"), bios = rows("bios.rows");
// /usr/bin/bash is built from this source package with image/bash/*.patch.
const bashSource = existsSync(join(work, "bash-source.rows")) ? rows("bash-source.rows") : [];
// /usr/bin/jq is built from this (trixie) source package, linked with the image's libonig5.
const jqSource = existsSync(join(work, "jq-source.rows")) ? rows("jq-source.rows") : [];

const uniqSources = (list) => {
  const seen = new Map();
  for (const r of list) seen.set(`${r.source} ${r.sourceVersion}`, { package: r.source, version: r.sourceVersion });
  return [...seen.values()].sort((a, b) => a.package.localeCompare(b.package));
};

const file = (name, sources) => {
  const buf = readFileSync(join(out, name));
  return { path: name, size: buf.length, sha256: createHash("sha256").update(buf).digest("hex"), sources };
};

const unpackedOf = (name) => {
  const disk = brotliDecompressSync(readFileSync(join(out, name)));
  return { size: disk.length, sha256: createHash("sha256").update(disk).digest("hex") };
};

// The static agent links glibc's and gcc's static libraries from the host toolchain
// (libc6-dev-i386, lib32gcc-12-dev); they are part of the initrd's corresponding source.
const hostSource = (pkg) => {
  try {
    const [src, ver] = execFileSync("dpkg-query", ["-W", "-f=${source:Package} ${source:Version}", pkg], { encoding: "utf8" }).split(" ");
    return { source: src, sourceVersion: ver };
  } catch { return undefined; }
};
const initrdSources = [...rootfs, ...bashSource, ...jqSource];
// bash is built the same way, so its static code comes from the same toolchain.
if (existsSync(join(work, "v86box-agent")) || bashSource.length > 0 || jqSource.length > 0) {
  for (const p of ["libc6-dev-i386", "lib32gcc-12-dev"]) {
    const s = hostSource(p);
    if (s) initrdSources.push(s);
  }
}

const manifest = {
  format: 1,
  v86: v86,
  agentProtocol: Number(agentProtocol),
  memoryMB: Number(memoryMB),
  cmdline,
  files: {
    kernel: file("bzImage", uniqSources(kernel)),
    // The root filesystem as v86's first IDE disk (V86 option `hda`), read-only squashfs,
    // brotli-compressed: `unpacked` is the disk the SDK unpacks it to.
    rootfs: { ...file("rootfs.squashfs.br", uniqSources(initrdSources)), unpacked: unpackedOf("rootfs.squashfs.br") },
    // Only with build.sh --initrd: the same tree as one initramfs (slow to boot).
    ...(existsSync(join(out, "rootfs.cpio.gz")) ? { initrd: file("rootfs.cpio.gz", uniqSources(initrdSources)) } : {}),
    bios: file("seabios.bin", uniqSources(bios)),
    vgaBios: file("vgabios.bin", uniqSources(bios)),
  },
  packages: [
    ...[...rootfs, ...kernel, ...bios].map((r) => ({
      package: r.package, version: r.version, arch: r.arch, debSha256: r.debSha256,
      source: r.source, sourceVersion: r.sourceVersion,
    })),
    ...bashSource.map((r) => ({
      package: r.package, version: r.version, arch: "source", dscSha256: r.debSha256,
      source: r.source, sourceVersion: r.sourceVersion, builtWith: "image/bash/fork-server.patch",
    })),
    ...jqSource.map((r) => ({
      package: r.package, version: r.version, arch: "source", dscSha256: r.debSha256,
      source: r.source, sourceVersion: r.sourceVersion, suite: "trixie", builtWith: "image/build.sh build_jq",
    })),
  ],
  reproducible: true,
  notReproducible: [],
};
writeFileSync(join(out, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");

// LICENSES.md: one line per source package, licence from its Debian copyright file
// (summarised by hand below for the main ones; the rest say "see copyright").
const licence = {
  linux: "GPL-2.0-only (with Linux-syscall-note for UAPI headers)",
  seabios: "LGPL-3.0-or-later",
  bash: "GPL-3.0-or-later", coreutils: "GPL-3.0-or-later", grep: "GPL-3.0-or-later",
  sed: "GPL-3.0-or-later", gawk: "GPL-3.0-or-later", findutils: "GPL-3.0-or-later",
  diffutils: "GPL-3.0-or-later", tar: "GPL-3.0-or-later", gzip: "GPL-3.0-or-later",
  bzip2: "bzip2-1.0.6 (BSD-style)", "xz-utils": "0BSD / public domain (liblzma), GPL-2.0-or-later (some scripts)",
  jq: "MIT", "libonig": "BSD-2-Clause", bc: "GPL-3.0-or-later", procps: "GPL-2.0-or-later, LGPL-2.1-or-later (libproc2)",
  "util-linux": "GPL-2.0-or-later, LGPL-2.1-or-later and BSD (libraries)", file: "BSD-2-Clause",
  less: "GPL-3.0-or-later or BSD-2-Clause (Less License)", hostname: "GPL-2.0-or-later",
  debianutils: "GPL-2.0-or-later", busybox: "GPL-2.0-only", glibc: "LGPL-2.1-or-later (and others, see copyright)",
  "gcc-12": "GPL-3.0-or-later with GCC Runtime Library Exception", ncurses: "MIT-style (X11)",
  readline: "GPL-3.0-or-later", acl: "LGPL-2.1-or-later", attr: "LGPL-2.1-or-later",
  libselinux: "public domain", pcre2: "BSD-3-Clause", gmp: "LGPL-3.0-or-later or GPL-2.0-or-later",
  mpfr4: "LGPL-3.0-or-later", libsigsegv: "GPL-2.0-or-later", zlib: "Zlib", libcap2: "BSD-3-Clause or GPL-2.0-only",
  "libgcrypt20": "LGPL-2.1-or-later", "libgpg-error": "LGPL-2.1-or-later", lz4: "BSD-2-Clause (library)",
  "libzstd": "BSD-3-Clause or GPL-2.0-only", systemd: "LGPL-2.1-or-later (libsystemd, libudev)",
  "libcap-ng": "LGPL-2.1-or-later", libxcrypt: "LGPL-2.1-or-later", "ncurses-base": "MIT-style (X11)",
};
const all = uniqSources([...rootfs, ...kernel, ...bios]);
const lines = [
  "# Licences of the shipped guest image",
  "",
  "Generated by `image/build.sh`. Every binary in `assets/` comes from a Debian bookworm",
  "package (jq: built from trixie's source package) or from this repository; its",
  "corresponding source is the Debian **source",
  "package** named here, at the version given (`apt-get source PKG=VERSION`, or",
  "https://snapshot.debian.org). The full licence texts are in each source package's",
  "`debian/copyright`. `rootfs.cpio.gz`, when present, holds exactly the files of",
  "`rootfs.squashfs.br` (an uncompressed squashfs, brotli-compressed).",
  "",
  "| file | component | licence | Debian source package = version |",
  "| --- | --- | --- | --- |",
  `| bzImage | Linux kernel (built with image/kernel.fragment and image/patches/) | ${licence.linux} | linux = ${kernel[0]?.sourceVersion} |`,
  `| seabios.bin, vgabios.bin | SeaBIOS (bios.bin, vgabios-stdvga.bin) | ${licence.seabios} | seabios = ${bios[0]?.sourceVersion} |`,
  "| rootfs.squashfs.br | /init, skeleton files, v86box-agent (this repository, image/) | MIT | (this repository) |",
  ...bashSource.map((r) => `| rootfs.squashfs.br | /usr/bin/bash: built from the bash source package with image/bash/fork-server.patch (this repository) | ${licence.bash} | bash = ${r.sourceVersion} |`),
  ...jqSource.map((r) => `| rootfs.squashfs.br | /usr/bin/jq: built from the jq source package of Debian trixie (bookworm has only jq 1.6) | ${licence.jq} | jq = ${r.sourceVersion} |`),
  ...(existsSync(join(work, "v86box-agent"))
    ? ["| rootfs.squashfs.br | glibc and libgcc static code linked into v86box-agent and bash | LGPL-2.1-or-later; GPL-3.0 with GCC Runtime Library Exception | " +
        initrdSources.filter((s) => !s.package).map((s) => `${s.source} = ${s.sourceVersion}`).join(", ") + " |"]
    : []),
  ...all.filter((s) => s.package !== "linux" && s.package !== "seabios").map((s) =>
    `| rootfs.squashfs.br | ${rootfs.filter((r) => r.source === s.package).map((r) => r.package).join(", ")} | ${licence[s.package] ?? "see debian/copyright"} | ${s.package} = ${s.version} |`),
  "",
];
writeFileSync(join(out, "LICENSES.md"), lines.join("\n"));
