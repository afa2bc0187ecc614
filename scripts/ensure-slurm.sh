#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for the Slurm backend's tests and for trying it out.
#
#   eval "export $(scripts/ensure-slurm.sh)"     # installs (apt) and starts it; prints SLURM_CONF=...
#   scripts/ensure-slurm.sh --status              # says whether it runs; exit 0 only if it does
#   scripts/ensure-slurm.sh --stop                # stops every daemon it started (keeps the folder)
#   SPOT_RUNNER_SLURM_PODMAN_IMAGES="localhost/runner-cifar:latest" scripts/ensure-slurm.sh
#                                                 # also copies those images from Docker into Podman
#
# Needs root and apt (Debian bookworm: Slurm 22.05). Idempotent: a second call finds the daemons
# running and only prints SLURM_CONF. Everything lives under one folder, $SPOT_RUNNER_SLURM_DIR
# (default /tmp/spot-runner-slurm): configs, state, logs, the munge key and socket, MariaDB's data.
# No systemd, no cgroups; ports are picked free when the folder is first made (never fixed ports).
#
# The cluster: one node (this machine, declared with $SPOT_RUNNER_SLURM_CPUS CPUs, default 8, so a
# few small jobs run side by side on a small machine) and three partitions:
#   spot   (default) PriorityTier=1  PreemptMode=REQUEUE GraceTime=10   the preemptible one
#   short            PriorityTier=1  PreemptMode=OFF  MaxTime=1 (minute)   wall-time chains, never preempted
#   high             PriorityTier=10 PreemptMode=OFF                      preempts what runs on spot
# plus slurmdbd and MariaDB, so `sacct` works. The settings that matter, and why, are in
# docs/slurm.md ("The test cluster") and ../shared/reference/cloud-facts.md.
#
# Podman (for the `podman` runtime) is installed too unless SPOT_RUNNER_SLURM_PODMAN=0; images named in
# $SPOT_RUNNER_SLURM_PODMAN_IMAGES are copied from Docker (`docker save | podman load`, about 2 min for
# the 6.5 GB task images) when Podman lacks them or Docker's copy changed since.
#
# Only stdout carries SLURM_CONF=<path>; everything else goes to stderr.
set -euo pipefail

DIR="${SPOT_RUNNER_SLURM_DIR:-/tmp/spot-runner-slurm}"
CPUS="${SPOT_RUNNER_SLURM_CPUS:-8}"
CLUSTER=spotrunner
NODE="$(hostname -s)"
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
[ "${SPOT_RUNNER_SLURM_PODMAN:-1}" = 0 ] || PACKAGES+=(podman)
# sshd: tests/slurm/test_ssh.py starts one on a free port as the cluster's "login node" (never the system's).
PACKAGES+=(openssh-server)
CONF="$DIR/etc/slurm.conf"
MUNGE_SOCKET="$DIR/munge/munge.socket"
DB_SOCKET="$DIR/mysql/mysqld.sock"

say() { printf 'ensure-slurm: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

alive() {  # alive PIDFILE: the pid in it runs
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: retry COMMAND every 0.5 s
  local seconds="$1" what="$2"; shift 2
  local deadline=$(( $(date +%s) + seconds ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "$what did not come up in ${seconds}s; its log:"
      tail -n 20 "$DIR/log/$what.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.5
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

install_packages() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "needs root to install ${missing[*]} with apt (run it with sudo)"
  say "installing with apt: ${missing[*]}"
  # Keep the packages' own services from starting (they would take the fixed default ports).
  local guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$guard"; chmod 755 "$guard"
  fi
  export DEBIAN_FRONTEND=noninteractive
  local rc=0
  { apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }; } || rc=$?
  [ -n "$guard" ] && rm -f "$guard"
  [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed (rc=$rc)"
}

check_reachable() {  # munged and MariaDB run as their own users: they must be able to walk to $DIR
  local user
  mkdir -p "$DIR"
  for user in munge mysql; do
    runuser -u "$user" -- test -x "$DIR" 2>/dev/null \
      || die "$DIR cannot be reached by the $user user (a parent folder is private): pick another SPOT_RUNNER_SLURM_DIR, such as /tmp/spot-runner-slurm"
  done
}

write_configs() {
  [ -s "$CONF" ] && return 0
  say "creating the cluster's folder $DIR"
  mkdir -p "$DIR"/{etc,munge,mysql,db,log,run,state/ctld,state/d}
  local ctld_port slurmd_port dbd_port db_port memory password
  ctld_port=$(free_port); slurmd_port=$(free_port); dbd_port=$(free_port); db_port=$(free_port)
  memory=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
  password=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  cat >"$CONF" <<EOF
# Written by scripts/ensure-slurm.sh: a one-node test cluster, everything under $DIR.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job is held cred_expire+1 s (121 s by default).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No systemd and no cgroups here: track processes by their parents, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# The node is declared with $CPUS CPUs whatever the machine has.
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# Otherwise a job that could start waits up to a minute for the next scheduling pass.
SchedulerParameters=bf_interval=1,sched_interval=2
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
# The batch shell gets the job's --signal at preemption (else only srun steps get SIGTERM).
SlurmctldParameters=preempt_send_user_signal
KillWait=10
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
# With auth/munge this names munge's socket; without it slurmctld dies with "no TRES from database".
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$memory State=UNKNOWN
PartitionName=spot Nodes=$NODE Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=10
PartitionName=short Nodes=$NODE MaxTime=1 State=UP PriorityTier=1 PreemptMode=OFF
PartitionName=high Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=$password
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"
  cat >"$DIR/etc/my.cnf" <<EOF
[mysqld]
datadir=$DIR/db
socket=$DB_SOCKET
pid-file=$DIR/run/mariadb.pid
log-error=$DIR/log/mariadb.log
bind-address=127.0.0.1
port=$db_port
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_log_file_size=16M
EOF
  printf '%s\n' "$password" >"$DIR/etc/db-password"; chmod 600 "$DIR/etc/db-password"
  # Slurm's own test for a directory it may write to.
  chmod 755 "$DIR" "$DIR/etc"
  dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  # munged wants its socket folder searchable by all (clients) and writable by it alone.
  chown -R munge:munge "$DIR/munge"; chmod 711 "$DIR/munge"; chmod 400 "$DIR/munge/munge.key"
  chown -R mysql:mysql "$DIR/db" "$DIR/mysql"
}

start_munge() {
  alive "$DIR/run/munged.pid" && return 0
  say "starting munged"
  # munged refuses group/world-writable parents of its socket; the folder is munge's alone.
  touch "$DIR/log/munged.log"; chown munge:munge "$DIR/log/munged.log"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
  wait_for 20 munged test -S "$MUNGE_SOCKET"
  cp "$DIR/munge/munged.pid" "$DIR/run/munged.pid"
}

start_mariadb() {
  alive "$DIR/run/mariadb.pid" && return 0
  if [ ! -d "$DIR/db/mysql" ]; then
    say "initialising MariaDB's data folder"
    mariadb-install-db --defaults-file="$DIR/etc/my.cnf" --user=mysql --auth-root-authentication-method=socket \
      >"$DIR/log/mariadb-install.log" 2>&1 || { tail -n 20 "$DIR/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  say "starting MariaDB"
  touch "$DIR/log/mariadb.log"; chown mysql:mysql "$DIR/log/mariadb.log" "$DIR/run"
  chmod 755 "$DIR/run"
  (setsid mariadbd --defaults-file="$DIR/etc/my.cnf" --user=mysql </dev/null >>"$DIR/log/mariadb.log" 2>&1 &)
  wait_for 60 mariadb mariadb --socket="$DB_SOCKET" -uroot -e 'select 1'
  local password; password=$(cat "$DIR/etc/db-password")
  mariadb --socket="$DB_SOCKET" -uroot <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
}

start_slurm() {
  export SLURM_CONF="$CONF"
  if ! alive "$DIR/run/slurmdbd.pid"; then
    say "starting slurmdbd"
    slurmdbd
    wait_for 60 slurmdbd sacctmgr -n show cluster
  fi
  if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >&2
  fi
  if ! alive "$DIR/run/slurmctld.pid"; then
    say "starting slurmctld"
    slurmctld
    wait_for 60 slurmctld scontrol ping
  fi
  if ! alive "$DIR/run/slurmd.pid"; then
    say "starting slurmd"
    slurmd -N "$NODE"
  fi
  wait_for 60 slurmd node_idle
}

node_idle() {
  local state
  state=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n 1)
  case "$state" in
    idle*|mixed*|allocated*|completing*) return 0 ;;
    down*|drain*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true; return 1 ;;
    *) return 1 ;;
  esac
}

copy_podman_images() {
  local image id have started need free
  for image in ${SPOT_RUNNER_SLURM_PODMAN_IMAGES:-}; do
    command -v podman >/dev/null || die "podman is not installed; unset SPOT_RUNNER_SLURM_PODMAN=0"
    id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null) || die "Docker has no image $image to copy into Podman (make image)"
    have=$(podman image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
    [ "${id#sha256:}" = "$have" ] && continue  # the same image (its config digest) is there already
    # The stale copy goes first: two 6 GB copies of a task image do not fit on every disk.
    [ -z "$have" ] || { podman rmi -f "$image" >/dev/null 2>&1 || true; podman image prune -f >/dev/null 2>&1 || true; }
    need=$(( $(docker image inspect -f '{{.Size}}' "$image") / 1048576 ))
    free=$(df -Pm /var/lib/docker | awk 'NR == 2 {print $4}')
    [ "$free" -gt $(( need * 2 )) ] || die "copying $image into Podman needs about $(( need * 2 )) MiB free on /var/lib/docker (a save file and the copy), $free MiB are: free some (docker image prune, rm -rf leftovers in /tmp) and rerun"
    say "copying $image from Docker into Podman ($id, $need MiB)"
    started=$(date +%s)
    # niced: CI runs this beside its first tests (podman load's hashing and writing would slow them)
    docker save "$image" | nice -n 10 podman load >&2 || die "docker save $image | podman load failed"
    say "copied $image in $(( $(date +%s) - started ))s"
  done
}

stop_all() {
  local name pidfile pid
  for name in slurmd slurmctld slurmdbd mariadb munged; do
    pidfile="$DIR/run/$name.pid"
    [ "$name" = munged ] && pidfile="$DIR/munge/munged.pid"
    if alive "$pidfile"; then
      pid=$(cat "$pidfile")
      say "stopping $name ($pid)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$DIR/run/munged.pid"
}

status() {
  local name ok=0 pidfile
  for name in munged mariadb slurmdbd slurmctld slurmd; do
    pidfile="$DIR/run/$name.pid"
    [ "$name" = munged ] && pidfile="$DIR/munge/munged.pid"
    if alive "$pidfile"; then say "$name runs ($(cat "$pidfile"))"; else say "$name is not running"; ok=1; fi
  done
  [ "$ok" -eq 0 ] && SLURM_CONF="$CONF" scontrol ping >&2
  return "$ok"
}

case "${1:-}" in
  --stop) stop_all; exit 0 ;;
  --status) status; exit $? ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  "") ;;
  *) die "unknown option $1 (known: --stop, --status, --help)" ;;
esac

[ "$(id -u)" -eq 0 ] || die "needs root: it starts slurmctld, slurmd and MariaDB (run it with sudo)"
# One start at a time: .ci/run starts the cluster in the background while the first tests run, and
# the Slurm tests' fixture runs this script too; a second call waits here, then finds it running.
# flock -o: the lock's descriptor is not handed down to the daemons this script leaves running.
if [ "${SPOT_RUNNER_SLURM_LOCKED:-}" != 1 ]; then
  flock -n -o "$DIR.lock" true || say "another ensure-slurm.sh is starting the cluster; waiting (lock: $DIR.lock)"
  exec env SPOT_RUNNER_SLURM_LOCKED=1 flock -o "$DIR.lock" "$0" "$@"
fi
started=$(date +%s)
install_packages
check_reachable
write_configs
start_munge
start_mariadb
start_slurm
copy_podman_images
say "cluster $CLUSTER up in $(( $(date +%s) - started ))s: partitions $(sinfo -h -o '%P' | tr '\n' ' ')"
printf 'SLURM_CONF=%s\n' "$CONF"
