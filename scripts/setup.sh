#!/usr/bin/env bash
# Install what pytest-services needs on a Debian/Ubuntu machine, then run a pytest command.
#
#   scripts/setup.sh demo    set up, then run the demo suite in examples/
#   scripts/setup.sh test    set up, then lint and run the test suite: with the newest
#                            releases, with the oldest ones pyproject.toml allows, the
#                            PostgreSQL tests as an ordinary user on both, the
#                            MySQL tests with PyMySQL instead of mysqlclient, the
#                            Django tests with Django 4.2 and the newest Django; then the
#                            demo suite under -n 2 (the legs of tox.ini, in that order)
#   scripts/setup.sh ordinary-user
#                            set up, then only the PostgreSQL tests as an ordinary user (as
#                            root: as an account made for them), newest and oldest releases
#
# Debian packages are installed with apt-get (as root, or through sudo) only when missing;
# Python packages go into a virtual environment (.venv, or $VENV).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
python="${PYTHON:-python3}"

packages=(
    memcached redis-server mariadb-server postgresql postgresql-contrib xvfb xauth x11-utils tzdata
    libmemcached-dev libmariadb-dev pkg-config gcc
    # A headed browser and X clients for the Xvfb tests; ImageMagick reads their screenshots.
    chromium chromium-driver x11-apps imagemagick
)
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    packages+=(python3-venv)
fi
# Root runs the ordinary-user leg on copies of its own Pythons when they live where others
# cannot go (patchelf points a copy at its own libpython), else on Debian's.
if [[ $(id -u) == 0 ]]; then
    packages+=(patchelf)
    if ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
        packages+=(python3-venv)
    fi
fi
if ! "$python" -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null; then
    packages+=(python3-dev)
fi

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    sudo=()
    if [[ $(id -u) != 0 ]]; then
        sudo=(sudo)
    fi
    echo "Installing Debian packages: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # The tests start their own servers; the system-wide ones are not needed.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -U pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -e "$root[memcached,mysql,postgresql,redis,django]" -r "$root/requirements-test.txt"

# The Django helpers and the pytest-django integration are also tested against Django 4.2 LTS
# and against the newest release, which may need a newer Python than the main environment has.
django_venv() {  # django_venv NAME PYTHON REQUIREMENT
    local dir="$root/.venv-$1"
    [[ -x "$dir/bin/python" ]] || "$2" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --disable-pip-version-check -e "$root[mysql,postgresql,django]" "$3" \
        pytest pytest-xdist
    "$dir/bin/python" -m pytest tests/test_django_settings.py tests/test_django_db.py tests/test_django_postgresql.py -p pytester -q
}

oldest_python() {  # the oldest supported Python (3.9) on the machine, else the oldest found
    local candidate
    for candidate in python3.9 \
        $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9*/bin/python3 2>/dev/null | sort -V) \
        python3.10 \
        $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[0-9]*/bin/python3 2>/dev/null | sort -V); do
        if "$candidate" -c 'import ensurepip, sys; assert sys.version_info >= (3, 9)' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "$python"
}

# The oldest releases that pyproject.toml allows.
oldest_pins=('pytest==7.0.*' 'pytest-xdist==3.0.*' 'portalocker==2.0.*' 'redis==4.0.*')

# The oldest releases that pyproject.toml allows: pytest 7.0, pytest-xdist 3.0, portalocker
# 2.0 and redis-py 4.0, on the oldest supported Python the machine has (the Django tests have
# legs of their own, below).
oldest_venv() {
    local dir="$root/.venv-oldest" interpreter
    interpreter="$(oldest_python)"
    [[ -x "$dir/bin/python" ]] || "$interpreter" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --disable-pip-version-check "$root[memcached,mysql,postgresql,redis]" \
        "${oldest_pins[@]}" sqlalchemy selenium PyMySQL
    # Installed as users install it, not editable, and again on each run to test this tree.
    "$dir/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$root"
}

oldest_leg() {
    local dir="$root/.venv-oldest"
    oldest_venv
    echo "Oldest supported releases: $("$dir/bin/python" -c 'import sys, pytest, xdist, portalocker, redis
print(f"Python {sys.version.split()[0]}, pytest {pytest.__version__}, pytest-xdist {xdist.__version__}, portalocker {portalocker.__version__}, redis-py {redis.__version__}")')"
    "$dir/bin/python" -m pytest tests -p pytester \
        --ignore tests/test_django_settings.py --ignore tests/test_django_db.py --ignore tests/test_django_postgresql.py
}

# The plugin's own MySQL work with PyMySQL alone, as where mysqlclient cannot be built: the
# MySQL tests in a virtual environment without mysqlclient (the slow ones left out).
pymysql_leg() {
    local dir="$root/.venv-pymysql"
    [[ -x "$dir/bin/python" ]] || "$python" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --disable-pip-version-check -e "$root[pymysql]" \
        pytest pytest-xdist
    "$dir/bin/python" -m pip uninstall -q -y mysqlclient 2>/dev/null || true
    "$dir/bin/python" -c 'import pymysql, importlib.util as u; assert not u.find_spec("MySQLdb")'
    "$dir/bin/python" -m pytest tests/test_mysql.py tests/test_mysql_state.py -p pytester \
        -m "not slow" -q
}

# Every PostgreSQL test as an ordinary user, on the newest and on the oldest releases, and
# on the newest the Django-on-PostgreSQL tests too: as root the plugin runs the server as
# `postgres`, as anyone else as that user. Root makes an account for it (ORDINARY_USER, services-test),
# gives it a copy of this tree in its home (the checkout may be in a folder only root
# enters), and builds its virtual environments there, kept with its pip cache between runs.
ordinary_user_leg() (
    pg_tests=(tests/test_postgresql*.py tests/test_spare.py)
    django_tests=(tests/test_django_postgresql.py)
    pg_demo=examples/test_demo_postgresql.py
    if [[ $(id -u) != 0 ]]; then
        echo "PostgreSQL tests as $(id -un), an ordinary user"
        "$venv/bin/python" -m pytest "${pg_tests[@]}" -p pytester -q
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "$root[django]"
        "$venv/bin/python" -m pytest "${django_tests[@]}" -p pytester -q
        "$venv/bin/python" -m pytest "$pg_demo" -n 2 -q
        oldest_venv
        echo "PostgreSQL tests as $(id -un), oldest releases: $("$root/.venv-oldest/bin/python" -c 'import sys, pytest
print(f"Python {sys.version.split()[0]}, pytest {pytest.__version__}")')"
        "$root/.venv-oldest/bin/python" -m pytest "${pg_tests[@]}" -p pytester -q
        return
    fi
    user="${ORDINARY_USER:-services-test}"
    if ! id -u "$user" >/dev/null 2>&1; then
        useradd --system --create-home --home-dir "/var/lib/$user" --shell /usr/sbin/nologin \
            --comment "runs the pytest-services tests as an ordinary user" "$user"
    fi
    home="$(getent passwd "$user" | cut -d: -f6)"
    [[ -d "$home" ]] || install -d -o "$user" -g "$(id -gn "$user")" -m 0755 "$home"
    as_user() {  # as_user COMMAND...: run COMMAND as the account, in its copy of this tree
        (cd "${copy:-/}" && runuser -u "$user" -- env -u TMPDIR -u PYTHONPATH -u XDG_CACHE_HOME \
            -u PYTEST_SERVICES_CACHE_DIR HOME="$home" USER="$user" LOGNAME="$user" \
            PIP_CACHE_DIR="$home/.cache/pip" "$@")
    }
    copy="$(as_user mktemp -d "$home/checkout.XXXXXX")"
    trap 'rm -rf "$copy"' EXIT
    # The files git knows (tracked, or new and not ignored), as they are in the working tree.
    git -C "$root" ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' file; do [[ -e "$root/$file" ]] && printf '%s\0' "$file"; done |
        tar -C "$root" --null -T - -cf - | as_user tar -xf - -C "$copy"
    for leg in newest oldest; do
        if [[ $leg == newest ]]; then
            interpreter="$python" pins=() extras=postgresql,django
        else
            interpreter="$(oldest_python)" pins=("${oldest_pins[@]}") extras=postgresql
        fi
        runnable="$(python_for_user "$interpreter")"
        dir="$home/venv-$leg-$(as_user "$runnable" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
        as_user test -x "$dir/bin/python" || as_user "$runnable" -m venv "$dir"
        as_user "$dir/bin/python" -m pip install -q --disable-pip-version-check \
            "$copy[$extras]" "${pins[@]}" pytest pytest-xdist sqlalchemy
        as_user "$dir/bin/python" -m pip install -q --disable-pip-version-check \
            --force-reinstall --no-deps "$copy"
        echo "PostgreSQL tests as $user, $leg releases: $(as_user "$dir/bin/python" -c 'import sys, pytest
print(f"Python {sys.version.split()[0]}, pytest {pytest.__version__}")')"
        as_user "$dir/bin/python" -m pytest "${pg_tests[@]}" -p pytester -q
        if [[ $leg == newest ]]; then
            as_user "$dir/bin/python" -m pytest "${django_tests[@]}" -p pytester -q
            as_user "$dir/bin/python" -m pytest "$pg_demo" -n 2 -q
        fi
    done
)

python_for_user() {  # python_for_user PYTHON: PYTHON's interpreter if the account can run it,
    # else a copy of its installation in the account's home (pyenv's live under /root, which
    # the account cannot enter), else Debian's of the same version, else Debian's python3
    local real version prefix copied candidate
    real="$("$1" -c 'import os, sys; print(os.path.realpath(sys.executable))')"
    version="$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if ! as_user "$real" -c 'import ensurepip, venv' 2>/dev/null; then
        prefix="$("$1" -c 'import sys; print(sys.base_prefix)')"
        copied="$home/python-$(basename "$prefix")"
        if ! as_user test -x "$copied/bin/python$version"; then
            as_user mkdir -p "$copied"
            tar -C "$prefix" --exclude="./lib/python$version/test" --exclude="./lib/python$version/site-packages/*" \
                -cf - . | as_user tar -xf - -C "$copied"
            # A shared build finds its libpython by a path under the original prefix.
            as_user patchelf --set-rpath '$ORIGIN/../lib' "$copied/bin/python$version"
        fi
        real="$copied/bin/python$version"
    fi
    for candidate in "$real" "/usr/bin/python$version" /usr/bin/python3; do
        if as_user "$candidate" -c 'import ensurepip, venv' 2>/dev/null; then
            [[ $candidate == "$real" ]] || echo "$user cannot run $real: using $candidate" >&2
            echo "$candidate"
            return
        fi
    done
    echo "$user cannot run $1 nor a Python of Debian's: install python3-venv" >&2
    return 1
}

newest_python() {  # the newest Python 3.12+ on the machine, else the main one
    local candidate
    for candidate in python3.14 python3.13 python3.12 \
        $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do
        if "$candidate" -c 'import ensurepip' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "$python"
}

cd "$root"
case "${1:-}" in
    demo)
        exec "$venv/bin/python" -m pytest examples --run-services -v
        ;;
    test)
        if [[ -n "${CI:-}" ]]; then
            export PYTEST_SERVICES_NO_SKIP=1  # CI installs everything: a skip is a failure
        fi
        "$venv/bin/ruff" check pytest_services tests benchmarks examples
        "$venv/bin/ruff" format --check pytest_services
        "$venv/bin/mypy"
        "$venv/bin/python" -m pytest tests -p pytester
        oldest_leg
        ordinary_user_leg
        pymysql_leg
        django_venv django42 "$python" 'Django>=4.2,<4.3'
        django_venv django-newest "$(newest_python)" 'Django'
        exec "$venv/bin/python" -m pytest examples -n 2 -v
        ;;
    ordinary-user)
        if [[ -n "${CI:-}" ]]; then
            export PYTEST_SERVICES_NO_SKIP=1
        fi
        ordinary_user_leg
        ;;
    *)
        echo "usage: $0 demo|test|ordinary-user" >&2
        exit 2
        ;;
esac
