# Benchmarks (issue 4): `make bench` measures ppp's two twins beside the peers
# with pytest-benchmark (bench/) and writes bench/results/bench.md (a table of
# per-operation medians and ratios, with the targets) and bench/results/bench.png
# (a chart of the ratios); the raw data stays in bench/results/*.json.
# Leg 1 runs everything with the compiled twin active (the Pool cases run both
# twins through the `backend` fixture); leg 2 runs ppp's Proxy cases again with
# PPP_NO_EXTENSIONS=1, where ppp.Proxy is the pure twin.
# `make bench-smoke` runs every benchmark once, unmeasured (--benchmark-disable),
# in both legs: the quick check that `make test` runs so they never rot.

BENCH_RESULTS := bench/results
BENCH_JSON := $(BENCH_RESULTS)/latest.json
BENCH_JSON_PURE := $(BENCH_RESULTS)/latest-pure.json
BENCH_ARGS ?=
BENCH_PYTEST := $(VPY) -m pytest -q -p no:cacheprovider
BENCH_PURE_CASES := bench/bench_proxy.py -k "test_ppp or test_churn_ppp"

.PHONY: bench bench-smoke bench-report

bench: $(STAMP)
	@mkdir -p $(BENCH_RESULTS)
	$(BENCH_PYTEST) bench --benchmark-json=$(BENCH_JSON) \
		--benchmark-columns=median,iqr,rounds --benchmark-sort=name $(BENCH_ARGS)
	PPP_NO_EXTENSIONS=1 $(BENCH_PYTEST) $(BENCH_PURE_CASES) --benchmark-json=$(BENCH_JSON_PURE) \
		--benchmark-columns=median,iqr,rounds --benchmark-sort=name $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-report

# Rewrite the table and the chart from the last run's data, without measuring again.
bench-report: $(STAMP)
	$(VPY) bench/report.py $(BENCH_JSON) $(BENCH_JSON_PURE) --out $(BENCH_RESULTS)

bench-smoke: $(STAMP)
	$(BENCH_PYTEST) bench --benchmark-disable $(BENCH_ARGS)
	PPP_NO_EXTENSIONS=1 $(BENCH_PYTEST) $(BENCH_PURE_CASES) --benchmark-disable $(BENCH_ARGS)
