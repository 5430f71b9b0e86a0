--
-- PostgreSQL database dump
--


-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;

SET lock_timeout = 0;

SET idle_in_transaction_session_timeout = 0;

SET client_encoding = 'UTF8';

SET standard_conforming_strings = on;

SELECT pg_catalog.set_config('search_path', '', false);

SET check_function_bodies = false;

SET xmloption = content;

SET client_min_messages = warning;

SET row_security = off;

--
-- Name: SCHEMA public; Type: ACL; Schema: -; Owner: pg_database_owner
--

GRANT CREATE ON SCHEMA public TO app;

--
-- Name: mood; Type: TYPE; Schema: public; Owner: app
--

CREATE TYPE public.mood AS ENUM (
    'a'
);

ALTER TYPE public.mood OWNER TO app;

--
-- Name: app_f(); Type: FUNCTION; Schema: public; Owner: app
--

CREATE FUNCTION public.app_f() RETURNS text
    LANGUAGE sql SECURITY DEFINER
    AS $$select current_user::text$$;

ALTER FUNCTION public.app_f() OWNER TO app;

--
-- Name: app_g(); Type: FUNCTION; Schema: public; Owner: app
--

CREATE FUNCTION public.app_g() RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN

ALTER TABLE app_t OWNER TO reader;
GRANT SELECT ON app_t TO reader;
END$$;

ALTER FUNCTION public.app_g() OWNER TO app;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: app_t; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public.app_t (
    id integer NOT NULL,
    v text
);

ALTER TABLE public.app_t OWNER TO app;

--
-- Name: v; Type: VIEW; Schema: public; Owner: app
--

CREATE VIEW public.v AS
 SELECT 1 AS owner;

ALTER TABLE public.v OWNER TO app;

--
-- Name: FUNCTION app_g(); Type: ACL; Schema: public; Owner: app
--

REVOKE ALL ON FUNCTION public.app_g() FROM PUBLIC;

GRANT ALL ON FUNCTION public.app_g() TO reader;

--
-- Name: TABLE app_t; Type: ACL; Schema: public; Owner: app
--

GRANT SELECT ON TABLE public.app_t TO reader;

--
-- Name: TABLE v; Type: ACL; Schema: public; Owner: app
--

GRANT SELECT ON TABLE public.v TO reader;

