#!/bin/bash
# A one-node SLURM cluster on this machine, for devnets' SLURM tests (tests/test_slurm.py) and for trying
# `hydra/launcher=slurm` without a cluster. Debian/Ubuntu, as root, no systemd needed.
#
#   scripts/slurm_cluster.sh up      # apt-get installs the packages if missing, writes /etc/slurm, starts the daemons
#   scripts/slurm_cluster.sh down    # stops the daemons, each by its PID file, in reverse order
#   scripts/slurm_cluster.sh status  # which daemons run
#
# SLURM 22.05 (Debian 12's slurmctld, slurmd, slurm-client, slurmdbd), munge and MariaDB: slurmdbd keeps the
# accounting that submitit reads job states from (sacct). One partition, `debug`, with this machine's cores
# and its memory less 1 GB. It writes /etc/slurm/slurm.conf and slurmdbd.conf, and refuses to replace ones
# it did not write. The apt packages and the accounting database stay after `down`.
set -euo pipefail

MARK="# written by devnets scripts/slurm_cluster.sh"
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
LOGS=/var/log/slurm
# Started in this order, stopped in the reverse one.
PIDFILES=(/run/munge/munged.pid /run/mysqld/mysqld.pid /run/slurm/slurmdbd.pid /run/slurm/slurmctld.pid
          /run/slurm/slurmd.pid)

running() {  # running PIDFILE: the process its PID names is alive
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: retry COMMAND once a second
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$seconds"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "slurm_cluster.sh: $what did not come up in ${seconds}s; see $LOGS/" >&2
  return 1
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v slurmdbd >/dev/null \
     && command -v sbatch >/dev/null && command -v munged >/dev/null && command -v mariadbd >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || { echo "slurm_cluster.sh: needs apt-get (Debian or Ubuntu)" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client slurmdbd munge mariadb-server \
    >/dev/null
}

write_config() {
  for file in "$CONF" "$DBD_CONF"; do
    if [ -s "$file" ] && ! grep -qxF "$MARK" "$file"; then
      echo "slurm_cluster.sh: $file exists and was not written by this script; not replacing it" >&2
      exit 1
    fi
  done
  local host cpus memory
  host=$(hostname -s)
  cpus=$(nproc)
  memory=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOGS" /run/slurm
  # No cgroups (containers often lack them): processes are tracked through /proc and nothing pins a job to
  # its cores, so a job's torch threads must match its cpus_per_task (devnets' threads=N does both).
  # cred_expire=10 and sched_interval=2: a requeued job (submitit's requeue at a time-out) may start again
  # cred_expire + 1 s later, and starts at the scheduler's next pass; SLURM's defaults (120 s, every 60 s) would
  # make the tests wait minutes for nothing.
  cat > "$CONF" <<EOF
$MARK
ClusterName=devnets
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$host
AccountingStoragePort=6819
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
KillWait=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  # slurmdbd runs as root and reaches MariaDB's root account through its socket (unix_socket
  # authentication): no database password to keep.
  cat > "$DBD_CONF" <<EOF
$MARK
AuthType=auth/munge
DbdHost=$host
DbdPort=6819
SlurmUser=root
LogFile=$LOGS/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=root
EOF
  chmod 600 "$DBD_CONF"
}

up() {
  [ "$(id -u)" = 0 ] || { echo "slurm_cluster.sh: run as root" >&2; exit 1; }
  install_packages
  write_config
  mkdir -p /run/munge /run/mysqld
  chown munge:munge /run/munge && chmod 755 /run/munge
  chown mysql:mysql /run/mysqld
  [ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key; }
  running /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
  wait_for 10 munge sh -c 'munge -n | unmunge'
  # MariaDB on its socket only, reading no /etc/mysql options (a plugin removed since would stop it).
  if ! running /run/mysqld/mysqld.pid; then
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir=/var/lib/mysql --skip-networking \
      --pid-file=/run/mysqld/mysqld.pid --socket=/run/mysqld/mysqld.sock > "$LOGS/mariadb.log" 2>&1 < /dev/null &
  fi
  wait_for 30 MariaDB test -S /run/mysqld/mysqld.sock
  running /run/slurm/slurmdbd.pid || /usr/sbin/slurmdbd
  wait_for 30 slurmdbd sacctmgr -n list cluster
  sacctmgr -i add cluster devnets >/dev/null 2>&1 || true  # "Nothing new added" once it exists
  running /run/slurm/slurmctld.pid || /usr/sbin/slurmctld
  running /run/slurm/slurmd.pid || /usr/sbin/slurmd
  wait_for 30 "the debug partition" sh -c 'sinfo -h -p debug -o %t | grep -qE "idle|mix|alloc"'
  sinfo
}

down() {
  local k pid
  for (( k = ${#PIDFILES[@]} - 1; k >= 0; k-- )); do
    running "${PIDFILES[k]}" || continue
    pid=$(cat "${PIDFILES[k]}")
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && echo "slurm_cluster.sh: $pid (${PIDFILES[k]}) still running after 30s" >&2
    echo "stopped ${PIDFILES[k]##*/} ($pid)"
  done
}

status() {
  local file
  for file in "${PIDFILES[@]}"; do
    if running "$file"; then echo "${file##*/}: running ($(cat "$file"))"; else echo "${file##*/}: stopped"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
