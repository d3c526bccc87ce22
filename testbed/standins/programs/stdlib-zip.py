"""The standard library modules the web UI stand-in imports, compiled into one zip for its image.

Run by the build machine's Debian python3 (testbed/standins/webui_image.py, _python_runtime):
    python3 -I stdlib-zip.py OUT.zip SOURCES EXTRA,MODULES,...
Prints the interpreter's major and minor version (the zip is usr/lib/pythonXY.zip in the image).
"""
import modulefinder, os, py_compile, sys, tempfile, zipfile
out, sources, extra = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
stdlib = os.path.dirname(os.__file__)
finder = modulefinder.ModuleFinder(path=[sources, os.path.join(sources, "modules"), stdlib],
                                   excludes=["torch", "webui", "modules", "tkinter", "test",
                                             "unittest", "pydoc", "doctest", "_pydecimal"])
for root, _, files in os.walk(sources):
    for name in sorted(files):
        if name.endswith(".py"):
            finder.run_script(os.path.join(root, name))
for name in extra:
    try:
        finder.import_hook(name)
    except ImportError:
        pass
    if name == "encodings":
        for file in sorted(os.listdir(os.path.join(stdlib, "encodings"))):
            if file.endswith(".py") and not file.startswith("mac_"):
                finder.import_hook("encodings." + file[:-3])
paths = {}
for name, module in finder.modules.items():
    file = module.__file__
    if not file or not file.endswith(".py") or not file.startswith(stdlib + "/"):
        continue
    arc = os.path.relpath(file, stdlib) + "c"
    paths[arc] = file
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf, tempfile.TemporaryDirectory() as tmp:
    for arc in sorted(paths):
        pyc = os.path.join(tmp, "m.pyc")
        py_compile.compile(paths[arc], cfile=pyc, dfile=arc[:-1], doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        info = zipfile.ZipInfo(arc, date_time=(2023, 11, 14, 22, 13, 20))
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, open(pyc, "rb").read())
print(sys.version_info[0], sys.version_info[1])
