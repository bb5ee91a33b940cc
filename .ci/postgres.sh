# Start Debian's PostgreSQL on 127.0.0.1 for the shared-store tests; exports RELU_EXPLORE_PG_URL.
# Sourced by .ci/run (as root). The tests clean up their own study and claim rows.
V=$(ls /usr/lib/postgresql | sort -n | tail -1)
pg_lsclusters -h | grep -q "^$V main" || pg_createcluster "$V" main >/dev/null
pg_ctlcluster "$V" main start 2>/dev/null || true
for i in $(seq 1 20); do su postgres -c "pg_isready -q -h 127.0.0.1" && break; sleep 0.5; done
su postgres -c "psql -qtc \"SELECT 1 FROM pg_roles WHERE rolname='relu'\"" | grep -q 1 || su postgres -c "psql -qc \"CREATE USER relu WITH PASSWORD 'relu';\""
su postgres -c "psql -qtc \"SELECT 1 FROM pg_database WHERE datname='relu_explore_test'\"" | grep -q 1 || su postgres -c "createdb -O relu relu_explore_test"
export RELU_EXPLORE_PG_URL=postgresql://relu:relu@127.0.0.1:5432/relu_explore_test
echo "PostgreSQL $V on 127.0.0.1: RELU_EXPLORE_PG_URL set"
