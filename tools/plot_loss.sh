#!/usr/bin/env bash
# Training loss (lines) and validation loss (points) against step, one colour per run,
# from the metrics.jsonl of `gpt train` run directories, drawn with gnuplot as a PNG
# and/or as text on standard output (for a terminal: gnuplot's `dumb` terminal).
#
#   tools/plot_loss.sh -o loss.png RUN_DIR [RUN_DIR...]
#   tools/plot_loss.sh -o loss.png -d RUN_DIR      # the PNG, and the same plot as text
#
# Options: -o FILE   the PNG to write (required unless -d)
#          -d        draw the plot as text, 79 columns by 24 lines, on standard output
#          -t TITLE  the plot's title (default: "loss")
#          -l        logarithmic loss axis
#          -s N      skip the first N steps of each run (the first losses dwarf the rest)
# Each run is titled with its directory's name. Needs gnuplot (Debian: gnuplot-nox).
set -euo pipefail

usage() {
    echo "usage: $0 [-o OUT.png] [-d] [-t TITLE] [-l] [-s SKIP] RUN_DIR [RUN_DIR...]" >&2
    exit 2
}

out="" text=0 title="loss" logy=0 skip=0
while getopts "o:dt:ls:h" opt; do
    case $opt in
        o) out=$OPTARG ;;
        d) text=1 ;;
        t) title=$OPTARG ;;
        l) logy=1 ;;
        s) skip=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
{ [ -n "$out" ] || [ "$text" = 1 ]; } && [ $# -ge 1 ] || usage
[[ $skip =~ ^[0-9]+$ ]] || { echo "plot_loss: -s wants a number of steps, not '$skip'" >&2; exit 2; }

if ! command -v gnuplot >/dev/null 2>&1; then
    echo "plot_loss: gnuplot not found: run \`make deps\` (or install the Debian package gnuplot-nox)" >&2
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plot_loss.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# gnuplot string literal: single quotes, doubled inside
gq() { printf "'%s'" "${1//\'/\'\'}"; }

plots=() i=0 any=0
for dir in "$@"; do
    metrics="$dir/metrics.jsonl"
    if [ ! -r "$metrics" ]; then
        echo "plot_loss: $metrics not found (is $dir a gpt train run directory?)" >&2
        exit 1
    fi
    i=$((i + 1))
    name=$(basename "$(cd "$dir" && pwd)")
    # One JSON object a line; take "step", "loss" and "val_loss" where they are numbers
    # (a skipped step may carry null or no loss).
    awk -v skip="$skip" -v tr="$tmp/train$i.dat" -v va="$tmp/val$i.dat" '
        function num(key,    m) {
            if (match($0, "\"" key "\"[ \t]*:[ \t]*-?[0-9][0-9.eE+-]*")) {
                m = substr($0, RSTART, RLENGTH); sub(/^[^:]*:[ \t]*/, "", m); return m
            }
            return ""
        }
        { s = num("step"); if (s == "" || s + 0 <= skip) next
          l = num("loss"); if (l != "") print s, l > tr
          v = num("val_loss"); if (v != "") print s, v > va }
    ' "$metrics"
    touch "$tmp/train$i.dat" "$tmp/val$i.dat"
    if [ -s "$tmp/train$i.dat" ]; then
        any=1
        plots+=("$(gq "$tmp/train$i.dat") using 1:2 with lines linestyle $i title $(gq "$name")")
    else
        echo "plot_loss: $metrics holds no losses" >&2
    fi
    if [ -s "$tmp/val$i.dat" ]; then
        plots+=("$(gq "$tmp/val$i.dat") using 1:2 with linespoints linestyle $i dashtype 2 pointtype 7 pointsize 1 title $(gq "$name val")")
    fi
done
[ "$any" = 1 ] || { echo "plot_loss: nothing to plot" >&2; exit 1; }

if gnuplot -e "set terminal" 2>&1 | grep -qw pngcairo; then
    term="pngcairo size 1000,600 noenhanced font ',10'"
else
    term="png size 1000,600 noenhanced"
fi

# The plot itself, after a terminal and output: PNG or text.
body() {
    echo "set title $(gq "$title")"
    echo "set xlabel 'step'"
    echo "set ylabel 'loss (nats per token)'"
    [ "$1" = png ] && echo "set grid"
    echo "set key top right"
    [ "$logy" = 1 ] && echo "set logscale y"
    for ((k = 1; k <= i; k++)); do echo "set linestyle $k linecolor $k linewidth 1.5"; done
    printf 'plot '
    sep=""
    for p in "${plots[@]}"; do printf '%s%s' "$sep" "$p"; sep=", \\"$'\n'"     "; done
    echo
}

draw() {  # draw SCRIPT: run gnuplot on it, showing the script if it fails
    if ! gnuplot "$1"; then
        echo "plot_loss: gnuplot failed on this script:" >&2
        cat "$1" >&2
        exit 1
    fi
}

if [ -n "$out" ]; then
    { echo "set terminal $term"; echo "set output $(gq "$out")"; body png; } > "$tmp/plot.gp"
    draw "$tmp/plot.gp"
fi
if [ "$text" = 1 ]; then
    # dumb draws on standard output; its key shows each curve's character
    { echo "set terminal dumb size 79,24 noenhanced"; body text; } > "$tmp/text.gp"
    draw "$tmp/text.gp"
fi
[ -z "$out" ] || echo "wrote $out ($i run(s))"
