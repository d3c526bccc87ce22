# sdinfra web UI STAND-IN (TEST ONLY; not AUTOMATIC1111's stable-diffusion-webui): webui.py of
# v1.10.1 (82a973c) and what it starts, reduced to what the deploy depends on. It generates
# no images. The knobs of the tests' control file are documented in testbed/standins/webui_image.py.
import base64
import glob
import hmac
import html
import http.server
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse

from modules import launch_utils
from modules.shared_cmd_options import cmd_opts

STARTED = time.monotonic()


def get_gradio_auth_creds():
    # modules/initialize_util.py get_gradio_auth_creds(): --gradio-auth split at commas, each
    # --gradio-auth-path line stripped and split at commas; each login stripped, empty ones
    # skipped, then split at the FIRST colon (`tuple(s.split(':', 1))`).
    def process_credential_line(s):
        s = s.strip()
        if not s:
            return None
        return tuple(s.split(':', 1))

    if cmd_opts.gradio_auth:
        for cred in cmd_opts.gradio_auth.split(','):
            cred = process_credential_line(cred)
            if cred:
                yield cred

    if cmd_opts.gradio_auth_path:
        with open(cmd_opts.gradio_auth_path, 'r', encoding="utf8") as file:
            for line in file.readlines():
                for cred in line.strip().split(','):
                    cred = process_credential_line(cred)
                    if cred:
                        yield cred


def gradio_logins(creds):
    # gradio 3.41 Blocks.launch(auth=[...]): `{account[0]: account[1] for account in auth}`:
    # a login without a colon (a 1-tuple) stops the start with IndexError.
    return {account[0]: account[1] for account in creds} if creds else None


def api_logins():
    # modules/api/api.py Api.__init__: `for auth in shared.cmd_opts.api_auth.split(","):
    # user, password = auth.split(":")`: a password holding ':' stops the web UI (ValueError:
    # too many values to unpack), a ',' makes two logins of one.
    credentials = {}
    for auth in cmd_opts.api_auth.split(","):
        user, password = auth.split(":")
        credentials[user] = password
    return credentials


def gradio_server_name():
    # modules/initialize_util.py gradio_server_name(): --server-name, else 0.0.0.0 with
    # --listen, else gradio's default, 127.0.0.1.
    if cmd_opts.server_name:
        return cmd_opts.server_name
    return "0.0.0.0" if cmd_opts.listen else "127.0.0.1"


class Settings:
    """shared.opts: config.json (--ui-settings-file, in the data directory by default)."""

    def __init__(self, path):
        self.path = path
        self.data = {}
        # modules/shared_init.py initialize(): opts.load(config_filename) when the file exists.
        if os.path.exists(path):
            with open(path, encoding="utf8") as handle:
                self.data = json.load(handle)
        self.lock = threading.Lock()

    def set_many(self, values):
        # modules/api/api.py set_config(): each key set, then opts.save(config_filename).
        with self.lock:
            self.data.update(values)
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf8") as handle:
                json.dump(self.data, handle, indent=4, ensure_ascii=False)
            os.replace(tmp, self.path)


def devices():
    return [d for d in ("/dev/kfd", *sorted(glob.glob("/dev/dri/*")), "/dev/nvidiactl",
                        *sorted(glob.glob("/dev/nvidia[0-9]*"))) if os.path.exists(d)]


def page(state):
    import torch

    info = state["info"]
    body = "".join(f"<li>{html.escape(k)}: <code id=\"{html.escape(k)}\">{html.escape(str(v))}</code></li>\n"
                   for k, v in info.items() if k != "env")
    env = "".join(f"<li><code>{html.escape(k)}={html.escape(v)}</code></li>\n"
                  for k, v in info["env"].items())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>Stable Diffusion web UI (sdinfra stand-in)</title></head><body>\n"
        "<h1>sdinfra web UI stand-in</h1>\n<p>This is a <strong>stand-in</strong> for the "
        "AUTOMATIC1111 Stable Diffusion web UI, used by sdinfra's tests. It generates no "
        f"images.</p>\n<ul>\n{body}<li>torch.cuda.is_available(): "
        f"<code id=\"gpu\">{torch.cuda.is_available()}</code></li>\n</ul>\n"
        f"<ul id=\"env\">\n{env}</ul>\n</body></html>\n"
    )


LOGIN_PAGE = ("<!DOCTYPE html>\n<html><head><title>Stable Diffusion (sdinfra stand-in)</title>"
              "</head><body><p>sdinfra web UI stand-in: log in</p><form method=\"post\" "
              "action=\"/login\"><input name=\"username\"><input name=\"password\" "
              "type=\"password\"></form></body></html>\n")


def make_handler(state):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "uvicorn"  # what answers in the real web UI
        sys_version = ""

        def log_message(self, format, *args):
            # The real web UI logs no requests (uvicorn's access log is off); the stand-in
            # logs method, path and status only, for the tests to read.
            pass

        def reply(self, code, body=b"", kind="application/json", headers=()):
            if isinstance(body, str):
                body = body.encode()
            self.send_response(code)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            for key, value in headers:
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            print(f"stand-in: {self.command} {self.path.split('?')[0]} {code}", file=sys.stderr, flush=True)

        def session(self):
            # gradio 3.41 routes.py get_current_user(): the access-token cookie set by /login.
            cookies = self.headers.get("cookie", "")
            for part in cookies.split(";"):
                name, _, value = part.strip().partition("=")
                if name.startswith("access-token") and value in state["tokens"]:
                    return state["tokens"][value]
            return None

        def api_allowed(self):
            # modules/api/api.py Api.auth(): HTTP Basic against the --api-auth logins, compared
            # with secrets.compare_digest; 401 with "WWW-Authenticate: Basic" otherwise.
            if state["api_logins"] is None:
                return True
            header = self.headers.get("authorization", "")
            scheme, _, encoded = header.partition(" ")
            if scheme.lower() != "basic":
                self.reply(401, '{"detail":"Not authenticated"}', headers=[("www-authenticate", "Basic")])
                return False
            try:
                user, _, password = base64.b64decode(encoded).decode().partition(":")
            except ValueError:
                user, password = "", None
            wanted = state["api_logins"].get(user)
            if wanted is not None and password is not None and secrets.compare_digest(password, wanted):
                return True
            self.reply(401, '{"detail":"Incorrect username or password"}', headers=[("www-authenticate", "Basic")])
            return False

        def route(self):
            path = urllib.parse.urlsplit(self.path).path
            if path == "/internal/ping":
                # modules/ui.py setup_ui_api(): `app.add_api_route("/internal/ping", lambda: {},
                # methods=["GET"])`, outside gradio's login.
                unhealthy = state["knobs"].get("unhealthy_after")
                if unhealthy is not None and time.monotonic() - state["listening"] >= unhealthy:
                    if not state.get("said_unhealthy"):
                        state["said_unhealthy"] = True
                        print("sdinfra stand-in: turned unhealthy (control file)", flush=True)
                    return self.reply(503, '{"detail":"stand-in turned unhealthy"}')
                return self.reply(200, "{}")
            if path.startswith("/sdapi/v1/"):
                # webui.py: the API exists with --api (create_api) only.
                if not state["api"]:
                    return self.reply(404, '{"detail":"Not Found"}')
                if not self.api_allowed():
                    return None
                if path == "/sdapi/v1/options" and self.command == "GET":
                    return self.reply(200, json.dumps(state["settings"].data))
                if path == "/sdapi/v1/options" and self.command == "POST":
                    length = int(self.headers.get("content-length") or 0)
                    try:
                        values = json.loads(self.rfile.read(length) or b"{}")
                    except ValueError:
                        return self.reply(422, '{"detail":"invalid JSON"}')
                    if not isinstance(values, dict):
                        return self.reply(422, '{"detail":"an object of settings"}')
                    state["settings"].set_many(values)
                    return self.reply(200, "null")
                return self.reply(404, '{"detail":"Not Found"}')
            if path == "/login" and self.command == "POST":
                # gradio 3.41 routes.py login(): form fields username, password; a cookie on
                # success, 400 "Incorrect credentials." otherwise.
                length = int(self.headers.get("content-length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                user = form.get("username", [""])[0].strip()
                password = form.get("password", [""])[0]
                wanted = (state["logins"] or {}).get(user)
                if wanted is not None and hmac.compare_digest(password.encode(), wanted.encode()):
                    token = secrets.token_urlsafe(16)
                    state["tokens"][token] = user
                    return self.reply(200, '{"success":true}', headers=[
                        ("set-cookie", f"access-token={token}; HttpOnly; Path=/; SameSite=none; Secure")])
                return self.reply(400, '{"detail":"Incorrect credentials."}')
            if self.command not in ("GET", "HEAD"):
                return self.reply(405, '{"detail":"Method Not Allowed"}')
            logged_in = state["logins"] is None or self.session() is not None
            if path == "/":
                # gradio 3.41: the login page until logged in, then the app.
                if not logged_in:
                    return self.reply(200, LOGIN_PAGE, "text/html; charset=utf-8")
                return self.reply(200, page(state), "text/html; charset=utf-8")
            if not logged_in:
                return self.reply(401, '{"detail":"Not authenticated"}')
            if path == "/standin.json":
                return self.reply(200, json.dumps(state["info"]))
            return self.reply(404, '{"detail":"Not Found"}')

        def do_GET(self):
            self.route()

        do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    return Handler


def webui():
    knobs = launch_utils.knobs()
    if "exit" in knobs:
        # Control file: fail at start, as a broken release or model would.
        print(knobs["exit"].get("log", "sdinfra stand-in: exit at start (control file)"), file=sys.stderr, flush=True)
        raise SystemExit(int(knobs["exit"].get("code", 1)))
    # The real web UI imports torch and its libraries and sets up the model before it listens:
    # a while, at least.
    time.sleep(float(knobs.get("start_delay", 2)))

    gradio_logins_ = gradio_logins(list(get_gradio_auth_creds()))
    settings = Settings(cmd_opts.ui_settings_file)
    # modules/ui_loadsave.py dump_defaults(): ui-config.json written when it differs.
    ui_config = {"txt2img/Prompt/visible": True, "txt2img/Prompt/value": ""}
    try:
        with open(cmd_opts.ui_config_file, encoding="utf8") as handle:
            current = json.load(handle)
    except (OSError, ValueError):
        current = None
    if current is None:
        with open(cmd_opts.ui_config_file, "w", encoding="utf8") as handle:
            json.dump(ui_config, handle, indent=4)

    state = {
        "knobs": knobs, "logins": gradio_logins_, "api_logins": None, "api": bool(cmd_opts.api),
        "settings": settings, "tokens": {}, "listening": 0.0,
        "info": {
            "standin": True, "version": launch_utils.VERSION,
            "backend": os.environ.get("SDINFRA_BACKEND", "unset"),
            "args": " ".join(a for a in sys.argv[1:]),
            "auth": "on" if gradio_logins_ else "off", "api_auth": "on" if cmd_opts.api_auth else "off",
            "listen": "yes" if cmd_opts.listen else "no", "port": cmd_opts.port or 7860,
            "data_dir": cmd_opts.data_dir, "devices": " ".join(devices()) or "none",
            "env": {k: os.environ[k] for k in ("HSA_OVERRIDE_GFX_VERSION", "ROC_ENABLE_PRE_VEGA",
                                               "NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES",
                                               "ROCR_VISIBLE_DEVICES", "OMP_NUM_THREADS",
                                               "TORCH_COMMAND", "HF_HUB_OFFLINE") if k in os.environ},
        },
    }
    name, port = gradio_server_name(), cmd_opts.port or 7860
    server = http.server.ThreadingHTTPServer((name, port), make_handler(state))
    server.daemon_threads = True
    state["listening"] = time.monotonic()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # gradio's line once it listens.
    print(f"Running on local URL:  http://{name}:{port}", flush=True)
    print(f"sdinfra web UI STAND-IN (not AUTOMATIC1111): backend={state['info']['backend']} "
          f"auth={state['info']['auth']}", flush=True)
    # webui.py: create_api(app) after gradio's launch: a bad --api-auth stops the web UI here.
    if cmd_opts.api:
        state["api_logins"] = api_logins() if cmd_opts.api_auth else None
    print(f"Startup time: {time.monotonic() - STARTED:.1f}s (stand-in).", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def api_only():
    # webui.py api_only(): the API alone (--nowebui), on port 7861 by default.
    cmd_opts.api = True
    if cmd_opts.port is None:
        cmd_opts.port = 7861
    webui()
