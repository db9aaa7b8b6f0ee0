# Soak (issue 7): `make soak` runs tests/soak/soak.py, a few minutes of long
# runs on both twins -- a million get/ret pairs, threads on a few objects, the
# error paths, 100,000 Proxy thread lifetimes and asyncio tasks -- and fails when
# tracemalloc, RSS, live objects or allocated blocks grow.  Kept out of
# `make test`; CI runs it after the tests.  Warnings are errors; not under
# -X dev (its debug allocator would blur the memory figures).
# `make soak SOAK_ARGS=--quick` runs every phase at a tenth of its size.

SOAK_ARGS ?=

.PHONY: soak

soak: $(STAMP)
	$(VPY) -W error tests/soak/soak.py $(SOAK_ARGS)
	PPP_NO_EXTENSIONS=1 $(VPY) -W error tests/soak/soak.py --phase pairs --phase proxy-threads $(SOAK_ARGS)
