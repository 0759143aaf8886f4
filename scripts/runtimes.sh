#!/usr/bin/env bash
# Container runtimes on this machine, for the tests and benchmarks that run real containers: installs and
# starts them idempotently (run as root; scripts/bootstrap.sh calls it unless BASELINER_NO_RUNTIMES is set).
#
#   * containerd with its CRI plugin (standalone, /run/containerd/containerd.sock), configured with
#     restrict_oom_score_adj and disable_apparmor (what a machine without AppArmor and with a restricted
#     oom_score_adj needs) and the sandbox image registry.k8s.io/pause:3.6, made locally (below);
#   * dockerd (Debian's docker.io) on that containerd, without a bridge: containers use the host network;
#   * podman with the cgroupfs manager, the host network by default, ulimits within this machine's hard
#     limits, and its API socket (/run/podman/podman.sock, `podman system service`);
#   * docker-compose and debootstrap;
#   * a base image built with `debootstrap --variant=minbase bookworm` (the root file system is cached as a
#     tarball in $BASELINER_CACHE, built once per machine) and imported into each runtime as
#     localhost/baseliner/debian:bookworm, and the pause image built from it.
#
# Nothing is pulled from an image registry.  With systemd running, the daemons are started as its units;
# otherwise they run in the background with logs in /var/log/baseliner/runtimes/.
#
#   scripts/runtimes.sh            # everything, idempotent (a second run takes about a second)
#   scripts/runtimes.sh --status   # what answers, exit 1 if something does not
set -euo pipefail

CACHE=${BASELINER_CACHE:-/var/cache/baseliner}
CONF=/etc/baseliner/runtimes
LOGS=/var/log/baseliner/runtimes
CONTAINERD_SOCK=/run/containerd/containerd.sock
DOCKER_SOCK=/var/run/docker.sock
PODMAN_SOCK=/run/podman/podman.sock
BASE_IMAGE=localhost/baseliner/debian:bookworm
PAUSE_IMAGE=registry.k8s.io/pause:3.6
ROOTFS_TAR=$CACHE/debian-bookworm-minbase.tar
PACKAGES=(containerd runc docker.io podman crun conmon containernetworking-plugins docker-compose debootstrap)

log() { printf '[runtimes] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

containerd_ok() {
  ctr --address "$CONTAINERD_SOCK" plugins ls 2>/dev/null | awk '$2 == "cri" && $NF == "ok" {f = 1} END {exit !f}'
}
docker_ok() { docker -H "unix://$DOCKER_SOCK" version --format '{{.Server.Version}}' >/dev/null 2>&1; }
podman_ok() { curl -sf --max-time 2 --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1; }

status() {
  local rc=0
  containerd_ok && log "containerd (CRI): ok at $CONTAINERD_SOCK" || { log "containerd (CRI): not answering"; rc=1; }
  docker_ok && log "dockerd: ok at $DOCKER_SOCK" || { log "dockerd: not answering"; rc=1; }
  podman_ok && log "podman API: ok at $PODMAN_SOCK" || { log "podman API: not answering"; rc=1; }
  return $rc
}

wait_for() {  # wait_for NAME CHECK-FUNCTION SECONDS LOGFILE
  local name=$1 check=$2 secs=$3 logfile=$4 i
  for ((i = 0; i < secs * 5; i++)); do
    "$check" && return 0
    sleep 0.2
  done
  [[ -f $logfile ]] && tail -n 20 "$logfile" >&2
  die "$name did not answer within ${secs}s (log: $logfile)"
}

start_daemon() {  # start_daemon NAME LOGFILE COMMAND...: in the background, detached from this shell
  local name=$1 logfile=$2
  shift 2
  log "starting $name"
  mkdir -p "$(dirname "$logfile")"
  setsid nohup "$@" >>"$logfile" 2>&1 </dev/null &
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}" curl; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  # policy-rc.d: where an init system exists, the packages' own units are not started by the install
  # (we start the daemons below with our configuration).
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { rm -f /usr/sbin/policy-rc.d; die "apt-get install failed"; }
  rm -f /usr/sbin/policy-rc.d
}

write_configs() {
  mkdir -p "$CONF" /etc/containers/containers.conf.d
  cat >"$CONF/containerd.toml" <<EOF
# written by scripts/runtimes.sh
version = 2
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
EOF
  local nofile nproc
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  [[ $nofile == unlimited ]] && nofile=1048576
  [[ $nproc == unlimited ]] && nproc=1048576
  # podman lowers its own RLIMIT_NPROC to 32768 when the hard limit is higher: stay within that too
  ((nproc > 32768)) && nproc=32768
  cat >/etc/containers/containers.conf.d/50-baseliner.conf <<EOF
# written by scripts/runtimes.sh: cgroupfs (no systemd needed), runc (crun refuses hybrid cgroups), the host
# network, limits within the hard limits
[containers]
netns = "host"
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
EOF
}

have_systemd() { [[ -d /run/systemd/system ]]; }

start_containerd() {
  containerd_ok && return 0
  if have_systemd; then
    mkdir -p /etc/systemd/system/containerd.service.d
    printf '[Service]\nExecStart=\nExecStart=/usr/bin/containerd --config %s\n' "$CONF/containerd.toml" \
      >/etc/systemd/system/containerd.service.d/baseliner.conf
    systemctl daemon-reload && systemctl restart containerd
  else
    pgrep -x containerd >/dev/null && die "a containerd runs without the CRI plugin answering; stop it first"
    start_daemon containerd "$LOGS/containerd.log" containerd --config "$CONF/containerd.toml"
  fi
  wait_for containerd containerd_ok 60 "$LOGS/containerd.log"
}

start_dockerd() {
  docker_ok && return 0
  local args=(--containerd "$CONTAINERD_SOCK" --bridge none --iptables=false --ip-masq=false
              -H "unix://$DOCKER_SOCK")
  if have_systemd; then
    mkdir -p /etc/systemd/system/docker.service.d
    printf '[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd %s\n' "${args[*]}" \
      >/etc/systemd/system/docker.service.d/baseliner.conf
    systemctl daemon-reload && systemctl restart docker
  else
    start_daemon dockerd "$LOGS/dockerd.log" dockerd "${args[@]}"
  fi
  wait_for dockerd docker_ok 60 "$LOGS/dockerd.log"
}

start_podman() {
  podman_ok && return 0
  mkdir -p "$(dirname "$PODMAN_SOCK")"
  rm -f "$PODMAN_SOCK"
  if have_systemd; then
    systemctl start podman.socket
  else
    start_daemon "podman API" "$LOGS/podman.log" podman system service --time=0 "unix://$PODMAN_SOCK"
  fi
  wait_for "podman API" podman_ok 30 "$LOGS/podman.log"
}

build_rootfs() {
  [[ -s $ROOTFS_TAR ]] && return 0
  local dir t0=$SECONDS
  mkdir -p "$CACHE"
  dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  log "building the base root file system (debootstrap --variant=minbase bookworm; once per machine)"
  debootstrap --variant=minbase bookworm "$dir" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$CACHE/debootstrap.log" >&2; rm -rf "$dir"; die "debootstrap failed"; }
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/tmp/*
  tar --numeric-owner -C "$dir" -cf "$ROOTFS_TAR.tmp" .
  mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  rm -rf "$dir"
  log "root file system cached at $ROOTFS_TAR in $((SECONDS - t0))s"
}

import_images() {
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "importing $BASE_IMAGE into docker"
    docker import --change 'CMD ["/bin/bash"]' "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
  fi
  if ! docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then
    log "building $PAUSE_IMAGE (sleeps) from $BASE_IMAGE"
    printf 'FROM %s\nENTRYPOINT ["/bin/sleep", "infinity"]\n' "$BASE_IMAGE" \
      | docker build -q -t "$PAUSE_IMAGE" - >"$LOGS/build.log" 2>&1 || { cat "$LOGS/build.log" >&2; die "docker build failed"; }
  fi
  local have
  have=$(ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q)
  if ! grep -qxF "$PAUSE_IMAGE" <<<"$have" || ! grep -qxF "$BASE_IMAGE" <<<"$have"; then
    log "importing $BASE_IMAGE and $PAUSE_IMAGE into containerd (namespace k8s.io, for CRI)"
    docker save "$BASE_IMAGE" "$PAUSE_IMAGE" | ctr --address "$CONTAINERD_SOCK" -n k8s.io images import - >/dev/null
  fi
  if ! podman image exists "$BASE_IMAGE"; then
    log "importing $BASE_IMAGE into podman"
    podman import -q --change 'CMD ["/bin/bash"]' "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
  fi
}

main() {
  if [[ ${1:-} == --status ]]; then status; exit; fi
  [[ $(id -u) -eq 0 ]] || die "must run as root"
  local t0=$SECONDS
  install_packages
  write_configs
  mkdir -p "$LOGS"
  start_containerd
  start_dockerd
  start_podman
  build_rootfs
  import_images
  log "ready in $((SECONDS - t0))s: containerd (CRI) $CONTAINERD_SOCK, dockerd $DOCKER_SOCK, podman $PODMAN_SOCK"
}

main "$@"
