# Benchmarks (issue 4): `make bench` measures ppp's two twins beside the peers
# with pytest-benchmark (bench/) and writes bench/results/bench.md (a table of
# per-operation medians and ratios, with the targets) and bench/results/bench.png
# (a chart of the ratios); the raw data stays in bench/results/latest.json.
# Every ppp case runs on both twins in the same process (the `backend` fixture).
# `make bench-smoke` runs every benchmark once, unmeasured (--benchmark-disable):
# the quick check that `make test` runs so they never rot.

BENCH_RESULTS := bench/results
BENCH_JSON := $(BENCH_RESULTS)/latest.json
BENCH_ARGS ?=
BENCH_PYTEST := $(VPY) -m pytest bench -q -p no:cacheprovider
BENCH_REPORT := $(VPY) bench/report.py $(BENCH_JSON) --out $(BENCH_RESULTS)

.PHONY: bench bench-smoke bench-report

bench: $(STAMP)
	@mkdir -p $(BENCH_RESULTS)
	$(BENCH_PYTEST) --benchmark-json=$(BENCH_JSON) \
		--benchmark-columns=median,iqr,rounds --benchmark-sort=name $(BENCH_ARGS)
	$(BENCH_REPORT)

# Rewrite the table and the chart from the last run's data, without measuring again.
bench-report: $(STAMP)
	$(BENCH_REPORT)

bench-smoke: $(STAMP)
	$(BENCH_PYTEST) --benchmark-disable $(BENCH_ARGS)
