# `make deploy-table`: the deployment table of issue 12 (tools/deploy_table.py).
# Real servers on 127.0.0.1 (gunicorn gthread and --preload, waitress, werkzeug)
# serving a pooled Proxy on PostgreSQL, with and without forgotten returns,
# beside psycopg_pool and SQLAlchemy's QueuePool, and behind PgBouncer; once per
# twin.  About 5 minutes each at the default 10 s of load per row:
#   make deploy-table DEPLOY_ARGS="--seconds 5 --only waitress"

DEPLOY_ARGS ?=

.PHONY: deploy-table

deploy-table: $(STAMP)
	$(VPY) tools/deploy_table.py $(DEPLOY_ARGS)
	PPP_NO_EXTENSIONS=1 $(VPY) tools/deploy_table.py $(DEPLOY_ARGS)
