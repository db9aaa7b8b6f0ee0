# `make demo`: ppp's main job, end to end (examples/demo.py).  A threaded
# werkzeug server whose requests each need a database connection, under load,
# for each variant in turn; prints a table and writes build/demo/ppp-demo.png.
# SQLite by default; PostgreSQL with DEMO_DSN (or PPP_DEMO_DSN in the environment):
#   make demo DEMO_DSN="host=127.0.0.1 dbname=test user=postgres"
#   make demo DEMO_ARGS="-n 5000 -c 32"

DEMO_DSN ?=
DEMO_ARGS ?=

.PHONY: demo

demo: $(STAMP)
	$(VPY) examples/demo.py $(if $(DEMO_DSN),--dsn '$(DEMO_DSN)') $(DEMO_ARGS)
