# Source this file (bash) to enter the stark_ros workspace: the venv, ROS 2 (the PyPI wheels in the
# venv, or the distro you sourced before), the vision_msgs stand-in where it was built, install/.
_stark_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$_stark_root/.venv/bin/python" ] || [ ! -f "$_stark_root/install/setup.bash" ]; then
  echo "stark_ros: the workspace is not set up yet; run 'make setup' in $_stark_root" >&2
  unset _stark_root
  return 1
fi
export VIRTUAL_ENV="$_stark_root/.venv"
case ":$PATH:" in *":$VIRTUAL_ENV/bin:"*) ;; *) export PATH="$VIRTUAL_ENV/bin:$PATH" ;; esac
# With the PyPI wheels the venv itself is an ament prefix (it holds share/ament_index).
if [ -d "$VIRTUAL_ENV/share/ament_index" ]; then
  case ":${AMENT_PREFIX_PATH:-}:" in
    *":$VIRTUAL_ENV:"*) ;;
    *) export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
  esac
fi
if [ -f "$_stark_root/.underlay/install/setup.bash" ]; then
  source "$_stark_root/.underlay/install/setup.bash"
fi
source "$_stark_root/install/setup.bash"
unset _stark_root
