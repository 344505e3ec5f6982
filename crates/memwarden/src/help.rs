//! The closing part of each subcommand's `--help`: examples (the README's) and, where a script
//! acts on them, the exit codes.

pub const SNAPSHOT: &str = "\
Examples:
  memwarden snapshot
  memwarden snapshot --json | jq '.gpus[] | {name, vram_used_bytes}'
  memwarden snapshot --workload comfyui";

pub const TOP: &str = "\
Examples:
  memwarden top
  memwarden top --replay examples/training-beside-inference.jsonl --speed 10";

pub const RECORD: &str = "\
Examples:
  memwarden record --out run.jsonl --interval 1s --duration 10m
  memwarden record --out - --interval 5s | gzip > run.jsonl.gz";

pub const ANALYZE: &str = "\
Examples:
  memwarden analyze run.jsonl
  memwarden analyze run.jsonl --json | jq '.series[] | select(.kind == \"gpu\") | .changepoints'
  memwarden analyze run.jsonl --csv - > series.csv";

pub const ESTIMATE: &str = "\
Examples:
  memwarden estimate qwen3-32b-q4_k_m.gguf --ctx 32768 --kv-type q8_0 --flash-attn --gpu 0
  memwarden estimate llama3.1:8b --json
  memwarden estimate model.gguf --ctx 16384 --parallel 4 --kv-unified --flash-attn off
  memwarden estimate model.gguf --gpu 0 --fits && echo fits
  memwarden estimate ./Qwen3-8B --engine vllm --ctx 32768 --vram 24GiB

Exit codes: 0 success (with --fits: it fits), 1 with --fits: it does not fit, 2 bad input.";

pub const FIT: &str = "\
Examples:
  make -j\"$(memwarden fit --pool ram --fixed 2GiB --per-worker 1.5GiB --want 32)\"
  memwarden fit --pool vram:0 --per-worker 6GiB
  memwarden fit --pool ram --per-worker 4GiB --json

Exit codes: 0 at least one worker fits (the number is on stdout), 1 not even one fits
(it is printed as 1, with a warning), 2 bad input.";

pub const PLACE: &str = "\
Examples:
  docker run $(memwarden place --cpus 8 --gpu 0 --format docker) my-image
  memwarden place --cpus 4 --mem 16GiB --format json";

pub const SERVE: &str = "\
Examples:
  memwarden serve --config deploy/memwarden.toml
  memwarden serve --config deploy/memwarden.toml --check
  memwarden serve                      # the Prometheus exporter only";

pub const RUN: &str = "\
Examples:
  memwarden run --consumer trainer -- python train.py
  memwarden run --consumer trainer --ttl 8h -- ./finetune.sh

Exit codes: the command's own; 128+N when it was killed by signal N, 126 when it cannot be
executed, 127 when it is not found, 2 bad input (or no lease).";

pub const DOCTOR: &str = "\
Examples:
  memwarden doctor
  memwarden doctor --json | jq '.checks[] | select(.status != \"ok\")'";

pub const STATUS: &str = "\
Examples:
  memwarden status
  MEMWARDEN_BROKER=http://gpu-box:7077 memwarden status
  memwarden status --json | jq '.consumers[] | {name, state}'

Exit codes: 0, 2 when the broker does not answer or refuses.";

pub const LOAD: &str = "\
Examples:
  memwarden load llama-8b
  memwarden load --broker http://127.0.0.1:7077 --token \"$TOKEN\" comfyui

Exit codes: 0 once loaded, 2 when the broker refused (with its reason) or did not answer.";

pub const UNLOAD: &str = "\
Examples:
  memwarden unload llama-8b

Exit codes: 0 once unloaded, 2 when the broker refused (with its reason) or did not answer.";

pub const LOGS: &str = "\
Examples:
  memwarden logs llama-8b
  memwarden logs -f llama-8b

Exit codes: 0, 2 when the broker does not answer or does not know the consumer.";
