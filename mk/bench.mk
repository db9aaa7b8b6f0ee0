# Benchmarks (issue 4): `make bench` measures ppp's two twins beside the peers
# with pytest-benchmark (bench/) and writes bench/results/bench.md (a table of
# per-operation medians and ratios, with the targets) and bench/results/bench.png
# (a chart of the ratios); the raw data stays in bench/results/latest.json.
# `make bench-smoke` runs every benchmark once, unmeasured (--benchmark-disable):
# the quick check that `make test` runs so the benchmarks never rot.

BENCH_RESULTS := bench/results
BENCH_JSON := $(BENCH_RESULTS)/latest.json
BENCH_ARGS ?=

.PHONY: bench bench-smoke bench-report

bench: $(STAMP)
	@mkdir -p $(BENCH_RESULTS)
	$(VPY) -m pytest bench -q -p no:cacheprovider --benchmark-json=$(BENCH_JSON) \
		--benchmark-columns=median,iqr,rounds --benchmark-sort=name $(BENCH_ARGS)
	$(VPY) bench/report.py $(BENCH_JSON) --out $(BENCH_RESULTS)

# Rewrite the table and the chart from the last run's data, without measuring again.
bench-report: $(STAMP)
	$(VPY) bench/report.py $(BENCH_JSON) --out $(BENCH_RESULTS)

bench-smoke: $(STAMP)
	$(VPY) -m pytest bench -q -p no:cacheprovider --benchmark-disable $(BENCH_ARGS)
