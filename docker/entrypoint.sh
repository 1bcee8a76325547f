#!/bin/sh
# Start the example site the production way: migrate, load the sample data into an empty site
# (never again: the admin's edits and deletions stay), load the model once (the first start on a
# machine also measures which encoder backend is fastest on its CPU, see `semsim info`) and read
# the HNSW indexes into PostgreSQL's memory (after a database restart the first searches would
# read them from disk page by page), then gunicorn. Any other command (the worker's, the dev
# server's) runs as given, without that preparation: in docker/compose.yaml those
# services start once web is healthy, so web has already migrated and loaded the sample data.
set -eu

if [ -z "${DJANGO_SECRET_KEY:-}" ]; then
    # Never a known key: a fresh one per container start (sessions end when it restarts).
    # Set DJANGO_SECRET_KEY to keep sessions across restarts.
    DJANGO_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')"
    export DJANGO_SECRET_KEY
    echo "entrypoint: DJANGO_SECRET_KEY is not set; using a random one for this container" >&2
fi

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

python manage.py migrate --noinput
python manage.py load_sample_data --if-empty
python manage.py semsim_warmup
exec gunicorn production_wsgi:application \
    --bind "0.0.0.0:${PORT:-8000}" \
    --workers "${WEB_CONCURRENCY:-2}" \
    --timeout 120 \
    --access-logfile -
