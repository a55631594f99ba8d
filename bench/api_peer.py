"""The peer of `mussikon bench api`: `POST /musicians` written the usual way, with the same
framework as ours (FastAPI on uvicorn, one worker) and SQLAlchemy's async engine and ORM
session (aiosqlite on SQLite, asyncpg on PostgreSQL) writing one row. No events, no outbox, no
handlers, no read models.

It checks the caller as ours does: a bearer API key whose SHA-256 digest is looked up in a
table of keys (one primary-key read in the request's session), 401 without one, 403 for a
role other than operator or service; the body is validated by the same pydantic model as
ours (`RegisterMusician`) and the answer has the same shape (`Written`).

Run as `python -m bench.api_peer --port P --url URL [--schema S] [--synchronous FULL]`; it
creates its tables, prints `{"key": …}` (an API key it stored, for the load generator), then
serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import JSON, DateTime, String, event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mussikon.entrypoints.http.models import RegisterMusician, Written


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))


class MusicianRow(Base):
    __tablename__ = "musicians"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(500))
    name: Mapped[str] = mapped_column(String(500))
    genres: Mapped[list[str]] = mapped_column(JSON)
    location: Mapped[str] = mapped_column(String(500))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def make_engine(url: str, schema: str, synchronous: str, pool_size: int) -> AsyncEngine:
    """The engine as a FastAPI service configures it: a pool as large as ours on PostgreSQL
    (the search path set to its schema), WAL and our durability setting on SQLite."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=0,
                               connect_args={"server_settings": {"search_path": schema}})


_bearer = HTTPBearer(auto_error=False)


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's session (a FastAPI dependency)."""
    async with request.app.state.sessions() as opened:
        yield opened


Session = Annotated[AsyncSession, Depends(_session)]


async def _caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                  db: Session) -> ApiKey:
    """The key's row: 401 without a known key, 403 for a role that may not register anyone."""
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid API key is needed")
    key = await db.get(ApiKey, hashlib.sha256(credentials.credentials.encode()).hexdigest())
    if key is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid API key is needed")
    if key.role not in ("operator", "service"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"the role {key.role} may not")
    return key


Caller = Annotated[ApiKey, Depends(_caller)]


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def register_musician(body: RegisterMusician, db: Session, _caller: Caller) -> Written:
    musician_id = body.musician_id or str(uuid.uuid4())
    db.add(MusicianRow(id=musician_id, email=body.email, name=body.name, genres=body.genres,
                       location=body.location, registered_at=datetime.now(UTC)))
    await db.commit()
    return Written(id=musician_id, stream_id=f"musician-{musician_id}", version=1)


def create_app(engine: AsyncEngine) -> FastAPI:
    """The application: `POST /musicians` and `GET /healthz`."""
    app = FastAPI()
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    app.get("/healthz")(healthz)
    app.post("/musicians", status_code=status.HTTP_201_CREATED,
             response_model=Written)(register_musician)
    return app


async def prepare(engine: AsyncEngine) -> str:
    """Create the tables and a service key; returns the key."""
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    key = "mk_" + secrets.token_urlsafe(32)
    async with AsyncSession(engine) as db:
        db.add(ApiKey(digest=hashlib.sha256(key.encode()).hexdigest(), name="bench",
                      role="service"))
        await db.commit()
    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", default="public")
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--pool-size", type=int, default=10)
    args = parser.parse_args()
    engine = make_engine(args.url, args.schema, args.synchronous, args.pool_size)
    print(json.dumps({"key": asyncio.run(_prepared(engine))}), flush=True)
    uvicorn.run(create_app(make_engine(args.url, args.schema, args.synchronous,
                                       args.pool_size)),
                host="127.0.0.1", port=args.port, log_level="warning", lifespan="on",
                server_header=False)


async def _prepared(engine: AsyncEngine) -> str:
    try:
        return await prepare(engine)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    main()
