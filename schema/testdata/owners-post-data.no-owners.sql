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

SET default_tablespace = '';

--
-- Name: app_t app_t_pkey; Type: CONSTRAINT; Schema: public; Owner: app
--

ALTER TABLE ONLY public.app_t
    ADD CONSTRAINT app_t_pkey PRIMARY KEY (id);

--
-- Name: app_t; Type: ROW SECURITY; Schema: public; Owner: app
--

ALTER TABLE public.app_t ENABLE ROW LEVEL SECURITY;

--
-- Name: app_t p; Type: POLICY; Schema: public; Owner: app
--

CREATE POLICY p ON public.app_t TO reader USING ((id > 0));

