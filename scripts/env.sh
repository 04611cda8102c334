# Source me: `. scripts/env.sh [cpu|cuda]` puts the project's build on the paths.
_ad_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_ad_variant=${1:-cpu}
if [[ ! -x $_ad_root/build/$_ad_variant/tools/caffe ]]; then
  echo "env.sh: no build in $_ad_root/build/$_ad_variant: run scripts/build.sh first" >&2
else
  . "$_ad_root/.venv/bin/activate"
  export PATH=$_ad_root/build/$_ad_variant/tools:$PATH
  export PYTHONPATH=$_ad_root/build/$_ad_variant/python${PYTHONPATH:+:$PYTHONPATH}
  export APPROX_DROPOUT_BUILD=$_ad_root/build/$_ad_variant
fi
unset _ad_root _ad_variant
