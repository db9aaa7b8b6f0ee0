# Benchmarks (issue 4): `make bench` measures ppp's two twins beside the peers
# with pytest-benchmark (bench/) and writes bench/results/bench.md (a table of
# per-operation medians and ratios, with the targets) and bench/results/bench.png
# (a chart of the ratios); the raw data stays in bench/results/latest.json.
# Every ppp case runs on both twins in the same process (the `backend` fixture).
# `make bench-smoke` runs every benchmark once, unmeasured (--benchmark-disable),
# under `python -X dev` as the tests do, with the compiled twin active and again
# with PPP_NO_EXTENSIONS=1: the quick check (seconds) that `make test` runs so
# the benchmarks never rot.

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
	$(VPY) -X dev -m pytest bench -q -p no:cacheprovider --benchmark-disable $(BENCH_ARGS)
	PPP_NO_EXTENSIONS=1 $(VPY) -X dev -m pytest bench -q -p no:cacheprovider --benchmark-disable \
		-m "not cython" $(BENCH_ARGS)
