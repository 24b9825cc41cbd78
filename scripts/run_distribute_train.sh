#!/usr/bin/env bash
# Data-parallel training with msrun: one train.py process per device, gradients all-reduced.
# msrun is run with --join True, so the job's exit status is the workers': when one worker
# crashes or is killed, msrun stops the others and this script exits non-zero naming its rank.
set -uo pipefail

PROG=$(basename "$0")
ROOT=$(cd "$(dirname "$0")/.." && pwd)

usage() {
    cat >&2 <<EOF
usage: bash scripts/$PROG DEVICE_NUM DATA_DIR RECIPE [PRETRAINED_CKPT] [-- TRAIN_ARGS...]
       bash scripts/$PROG [cifar10|imagenet2012] RANK_TABLE_FILE DATASET_PATH [PRETRAINED_CKPT] [-- TRAIN_ARGS...]

  The second form is the MindSpore model zoo's (MobileNetV1): the MobileNetV1 recipe of the
  dataset (RECIPE=path/to/recipe.yaml replaces it), one worker per device of the rank table
  (one node), which msrun also receives as --rank_table_file.

  DEVICE_NUM       worker processes on this node, one per device (e.g. 8)
  DATA_DIR         dataset root holding the split folders (e.g. /data/imagenet with train/ and val/)
  RECIPE           YAML recipe (e.g. configs/mobilenetv3/mobilenet_v3_small_ascend.yaml)
  PRETRAINED_CKPT  optional checkpoint to start from (passed as --ckpt_path)
  TRAIN_ARGS       more train.py options after --, e.g. -- --epoch_size 10 --ckpt_save_dir runs/x

environment:
  WORKER_NUM        workers over all nodes (default DEVICE_NUM: one node)
  NODE_RANK         this node's index 0..nodes-1 (multi-node; ranks = NODE_RANK x DEVICE_NUM + local)
  MASTER_ADDR       address of node 0, where msrun's scheduler runs (default 127.0.0.1)
  MASTER_PORT       scheduler port, free on node 0 (default 8118)
  LOG_DIR           msrun's logs: worker_<rank>.log, scheduler.log, msrun.log (default ./msrun_log)
  BIND_CORE         True to pin each worker to its share of CPU cores (msrun --bind_core; default False)
  CLUSTER_TIME_OUT  seconds to wait for every worker to join (default 600)
  TRAIN_SCRIPT      entry script run by every worker (default train.py of this repository)
EOF
    exit 2
}

fail() {
    echo "$PROG: error: $*" >&2
    exit 2
}

# The devices of a one-node rank table (v1.0 "server_list" or the older "group_list" layout).
rank_table_devices() {
    "$PY" - "$1" <<'PYEOF'
import json, sys
try:
    with open(sys.argv[1], encoding="utf-8") as f:
        table = json.load(f)
    if "server_list" in table:
        servers = table["server_list"]
        if len(servers) != 1:
            sys.exit(f"{len(servers)} servers; this form runs one node (use DEVICE_NUM with NODE_RANK)")
        print(len(servers[0]["device"]))
    else:
        print(sum(int(g["device_num"]) for g in table["group_list"]))
except (OSError, ValueError, KeyError, TypeError) as err:
    sys.exit(f"not a rank table ({type(err).__name__}: {err}); expected server_list[0].device or group_list")
PYEOF
}

if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
[ $# -ge 3 ] || usage
RANK_TABLE=""
case $1 in
    cifar10|imagenet2012)
        RANK_TABLE=$2
        DATA_DIR=$3
        [ -f "$RANK_TABLE" ] || fail "RANK_TABLE_FILE '$RANK_TABLE' not found; expected the rank table JSON"
        DEVICE_NUM=$(rank_table_devices "$RANK_TABLE" 2>&1) || fail "RANK_TABLE_FILE '$RANK_TABLE': $DEVICE_NUM"
        dataset_recipe="$ROOT/configs/mobilenetv1/mobilenet_v1_1.0_${1}_ascend.yaml"
        RECIPE=${RECIPE:-$dataset_recipe}
        ;;
    *)
        DEVICE_NUM=$1
        DATA_DIR=$2
        RECIPE=$3
        ;;
esac
shift 3
CKPT=""
if [ $# -ge 1 ] && [ "$1" != "--" ]; then
    CKPT=$1
    shift
fi
if [ $# -ge 1 ]; then
    [ "$1" = "--" ] || fail "unexpected argument '$1'; put train.py options after --"
    shift
fi

is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
is_count "$DEVICE_NUM" || fail "DEVICE_NUM must be a positive integer, got '$DEVICE_NUM'"
[ -d "$DATA_DIR" ] || fail "DATA_DIR '$DATA_DIR' is not a folder; expected the dataset root with train/ and val/"
[ -f "$RECIPE" ] || fail "RECIPE '$RECIPE' not found; expected a YAML recipe such as configs/mobilenetv3/*.yaml"
[ -z "$CKPT" ] || [ -f "$CKPT" ] || fail "PRETRAINED_CKPT '$CKPT' not found; expected a .ckpt file"

WORKER_NUM=${WORKER_NUM:-$DEVICE_NUM}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-8118}
LOG_DIR=${LOG_DIR:-./msrun_log}
BIND_CORE=${BIND_CORE:-False}
CLUSTER_TIME_OUT=${CLUSTER_TIME_OUT:-600}
TRAIN_SCRIPT=${TRAIN_SCRIPT:-$ROOT/train.py}
is_count "$WORKER_NUM" || fail "WORKER_NUM must be a positive integer, got '$WORKER_NUM'"
[ "$WORKER_NUM" -ge "$DEVICE_NUM" ] || fail "WORKER_NUM=$WORKER_NUM is below DEVICE_NUM=$DEVICE_NUM; WORKER_NUM counts the workers of all nodes"
if [ "$WORKER_NUM" -gt "$DEVICE_NUM" ] && [ -z "${NODE_RANK:-}" ]; then
    fail "WORKER_NUM=$WORKER_NUM > DEVICE_NUM=$DEVICE_NUM means several nodes: set NODE_RANK (0 on the MASTER_ADDR node)"
fi
[ -z "${NODE_RANK:-}" ] || [[ $NODE_RANK =~ ^[0-9]+$ ]] || fail "NODE_RANK must be 0, 1, ..., got '$NODE_RANK'"
[[ $MASTER_PORT =~ ^[0-9]+$ ]] && [ "$MASTER_PORT" -ge 1024 ] && [ "$MASTER_PORT" -le 65535 ] \
    || fail "MASTER_PORT must be a port in 1024-65535, got '$MASTER_PORT'"
case $BIND_CORE in True|False) ;; *) fail "BIND_CORE must be True or False, got '$BIND_CORE'" ;; esac
[ -f "$TRAIN_SCRIPT" ] || fail "TRAIN_SCRIPT '$TRAIN_SCRIPT' not found"
MSRUN=$(command -v msrun || { [ -x "$ROOT/.venv/bin/msrun" ] && echo "$ROOT/.venv/bin/msrun"; }) \
    || fail "msrun not found on PATH nor in $ROOT/.venv; activate the environment that has MindSpore"
# msrun starts workers with the 'python' found on PATH: make it the interpreter next to msrun.
export PATH="$(dirname "$MSRUN"):$PATH"

mkdir -p "$LOG_DIR" || fail "cannot create LOG_DIR '$LOG_DIR'"
MSRUN_LOG="$LOG_DIR/msrun.log"
args=(--worker_num "$WORKER_NUM" --local_worker_num "$DEVICE_NUM" --master_addr "$MASTER_ADDR"
      --master_port "$MASTER_PORT" --log_dir "$LOG_DIR" --join True --cluster_time_out "$CLUSTER_TIME_OUT")
[ -z "${NODE_RANK:-}" ] || args+=(--node_rank "$NODE_RANK")
[ "$BIND_CORE" = False ] || args+=(--bind_core True)
[ -z "$RANK_TABLE" ] || args+=(--rank_table_file "$(cd "$(dirname "$RANK_TABLE")" && pwd)/$(basename "$RANK_TABLE")")
train_args=(-c "$RECIPE" --data_dir "$DATA_DIR")
[ -z "$CKPT" ] || train_args+=(--ckpt_path "$CKPT")

echo "$PROG: $WORKER_NUM worker(s), $DEVICE_NUM on this node; logs in $LOG_DIR" >&2
"$MSRUN" "${args[@]}" "$TRAIN_SCRIPT" "${train_args[@]}" "$@" 2>&1 | tee "$MSRUN_LOG"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] && exit 0

# msrun names only the pid of the first worker it saw exit; each worker logs "rank R of N (pid P)".
reported=0
while read -r pid code; do
    reported=1
    log=$(grep -lE "rank [0-9]+ of [0-9]+ \(pid $pid\)" "$LOG_DIR"/worker_*.log 2>/dev/null | head -n 1)
    rank=""
    [ -z "$log" ] || rank=$(grep -oE "rank [0-9]+ of [0-9]+ \(pid $pid\)" "$log" | head -n 1 | cut -d' ' -f2)
    if [ "$code" -lt 0 ]; then
        how="was killed by signal $((-code)) (SIG$(kill -l $((-code)) 2>/dev/null || echo '?'))"
    else
        how="exited with code $code"
    fi
    if [ -n "$rank" ]; then
        echo "$PROG: error: rank $rank (pid $pid) $how; msrun stopped the other workers. Last lines of $log:" >&2
        grep -v "^\[INFO\]" "$log" | tail -n 5 | sed 's/^/    /' >&2
    else
        echo "$PROG: error: a worker (pid $pid) $how before it reported its rank; see $LOG_DIR/worker_*.log" >&2
    fi
done < <(sed -nE 's/.*Worker process ([0-9]+) exit with exception\. Error code: (-?[0-9]+)\..*/\1 \2/p' "$MSRUN_LOG")
[ "$reported" -eq 1 ] || echo "$PROG: error: msrun exited with status $rc; see $MSRUN_LOG and $LOG_DIR/worker_*.log" >&2
exit "$rc"
