"""``python -m antmeter_api``: serve the API and dashboard with uvicorn on ``HOST``:``PORT`` (default
127.0.0.1:8000)."""

import os

import uvicorn


def main() -> None:
    uvicorn.run(
        "antmeter_api.app:create_app",
        factory=True,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        workers=int(os.environ.get("ANTMETER_API_WORKERS", "1")),
        log_level=os.environ.get("ANTMETER_API_LOG_LEVEL", "info"),
    )


if __name__ == "__main__":
    main()
