"""stark_model's modules import each other without circles (function-level imports included), and
every backbone sits in backbones/ behind the registry."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'stark_model'


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _relative_imports(path: Path, modules: set[str]) -> set[str]:
    name = _module_name(path)
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split('.')[:len(package.split('.')) - (node.level - 1)]
            target = '.'.join(base + ([node.module] if node.module else []))
            found |= {t for t in [target] + [f'{target}.{a.name}' for a in node.names] if t in modules}
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    paths = [p for p in PACKAGE.rglob('*.py') if '__pycache__' not in p.parts]
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _relative_imports(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_find_cycle_sees_a_circle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None


def test_stark_model_has_no_import_circles():
    assert find_cycle(import_graph()) is None


def test_backbones_live_in_their_folder_behind_the_registry():
    from stark_model.backbones import BACKBONES

    files = {p.stem for p in (PACKAGE / 'backbones').glob('*.py')} - {'__init__'}
    assert files == {'frozen_norm', 'resnet', 'efficientnet_lite', 'nanotrack'}
    assert set(BACKBONES) == {'resnet18', 'resnet50', 'resnet101', 'efficientnet_lite0', 'nanotrack_v2'}
    assert not (PACKAGE / 'efficientnet.py').exists()
